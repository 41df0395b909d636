// oq/io/mapped_file.hpp: a read-only memory map of a whole file (POSIX).
//
// Why: a LLaMA-2-7B checkpoint is 13 GB in two shards; reading one 4096×11008
// weight should touch only its 90 MB (safetensors is designed for this: the
// header says where each tensor lies, so a reader maps the file and converts
// just the tensors it needs — https://huggingface.co/docs/safetensors/index).
// The kernel pages the data in on first access and can drop it again under
// memory pressure, which a std::vector copy of the file could not allow.
//
// The mapping is MAP_PRIVATE and PROT_READ: writing through it is impossible,
// and the file descriptor is closed right after mmap (the mapping keeps the
// file alive). A file that another process truncates while it is mapped makes
// accesses past the new end raise SIGBUS; oq cannot prevent that, as no
// memory-mapping reader can. A 0-byte file gives an empty span without
// calling mmap, which rejects a zero length.
#pragma once

#if !defined(__unix__) && !defined(__APPLE__)
#error "oq/io/mapped_file.hpp uses POSIX open/fstat/mmap; this platform is not supported"
#endif

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace oq::io {

/// RAII read-only memory map of a whole file. Move-only.
class MappedFile {
 public:
  /// Maps `path`. Throws std::system_error (a std::runtime_error) naming the
  /// path and the system's reason (strerror) when the file cannot be opened,
  /// is not a regular file, or cannot be mapped.
  explicit MappedFile(std::filesystem::path path) : path_(std::move(path)) {
    int fd;
    do {
      fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) fail("cannot open", errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      fail("cannot stat", err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      // A directory opens fine with O_RDONLY; mmap would then fail with the
      // less helpful ENODEV.
      fail("cannot map", S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail("cannot map", err);
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);  // the mapping holds its own reference to the file
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  MappedFile(MappedFile&& other) noexcept
      : path_(std::move(other.path_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}

  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      path_ = std::move(other.path_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  ~MappedFile() { unmap(); }

  /// The file's bytes (empty for a 0-byte file, and after being moved from).
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  [[noreturn]] void fail(const char* what, int err) const {
    throw std::system_error(err, std::generic_category(),
                            std::string("oq::io::MappedFile: ") + what + " '" + path_.string() + "'");
  }

  void unmap() noexcept {
    if (data_ != nullptr) {
      // munmap takes a non-const pointer; the mapping was created by this object.
      ::munmap(const_cast<std::byte*>(data_), size_);
    }
    data_ = nullptr;
    size_ = 0;
  }

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace oq::io
