// oq/io/mapped_file.hpp: a read-only memory map of a whole file, and the
// checked opening of a regular file that every reader of oq uses (POSIX).
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
//
// What is opened must be a regular file, checked on the opened descriptor
// (detail_file::RegularFile below, which read_npy and read_json use too): a
// FIFO or a device in place of a checkpoint file is refused at once instead
// of blocking the reader or feeding it endless bytes (issue 23).
#pragma once

#if !defined(__unix__) && !defined(__APPLE__)
#error "oq/io/mapped_file.hpp uses POSIX open/fstat/mmap; this platform is not supported"
#endif

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace oq::io {

namespace detail_file {

/// A regular file opened for reading: the one way oq's readers open files
/// (MappedFile, read_npy, read_json).
///
/// Why: open(2) of a FIFO for reading blocks until a writer appears (forever,
/// for a FIFO planted where a shard should be), and a device such as
/// /dev/zero or a terminal would be read without end. So the file is opened
/// with O_NONBLOCK, which makes open return at once for a FIFO and is
/// ignored by regular files, and the opened descriptor is checked with fstat:
/// checking the path first (std::filesystem::is_regular_file) and opening it
/// after would leave a window in which the path can be replaced.
class RegularFile {
 public:
  /// Throws std::system_error "<who>: cannot open '<path>': <reason>", or
  /// "<who>: '<path>' is a FIFO, not a regular file: …" (a directory, a
  /// character device, …) naming `who`, the path and the kind of file.
  RegularFile(const std::filesystem::path& path, std::string_view who) : path_(path), who_(who) {
    do {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) fail("cannot open '" + path_.string() + "'", errno);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      close();
      fail("cannot stat '" + path_.string() + "'", err);
    }
    if (!S_ISREG(st.st_mode)) {
      close();
      fail("'" + path_.string() + "' is " + kind_of(st.st_mode) + ", not a regular file",
           S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
    }
    size_ = static_cast<std::size_t>(st.st_size);
  }

  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  ~RegularFile() { close(); }

  int fd() const noexcept { return fd_; }
  /// The size fstat reported when the file was opened.
  std::size_t size() const noexcept { return size_; }

  /// Reads exactly n bytes at `offset` into dst. Throws std::system_error
  /// when reading fails, or when the file ends first (it shrank since it
  /// was opened).
  void read_at(std::size_t offset, void* dst, std::size_t n) const {
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      // At most 1 GiB per call: Linux transfers at most 0x7ffff000 bytes at once.
      const std::size_t chunk = n < (std::size_t{1} << 30) ? n : (std::size_t{1} << 30);
      const ::ssize_t got = ::pread(fd_, out, chunk, static_cast<::off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        fail("cannot read '" + path_.string() + "'", errno);
      }
      if (got == 0) {
        fail("'" + path_.string() + "' ended at byte " + std::to_string(offset) + " (it had " +
                 std::to_string(size_) + " bytes when opened)",
             EIO);
      }
      out += got;
      offset += static_cast<std::size_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }

 private:
  static std::string kind_of(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "of another kind";
  }

  [[noreturn]] void fail(const std::string& what, int err) const {
    throw std::system_error(err, std::generic_category(), who_ + ": " + what);
  }

  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::filesystem::path path_;
  std::string who_;
  int fd_ = -1;
  std::size_t size_ = 0;
};

}  // namespace detail_file

/// RAII read-only memory map of a whole file. Move-only.
class MappedFile {
 public:
  /// Maps `path`. Throws std::system_error (a std::runtime_error) naming the
  /// path and the system's reason (strerror) when the file cannot be opened,
  /// is not a regular file (checked on the opened descriptor, which a FIFO or
  /// a device cannot block: see detail_file::RegularFile), or cannot be mapped.
  explicit MappedFile(std::filesystem::path path) : path_(std::move(path)) {
    const detail_file::RegularFile file(path_, "oq::io::MappedFile");
    size_ = file.size();
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd(), 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        size_ = 0;
        fail("cannot map", err);
      }
      data_ = static_cast<const std::byte*>(p);
    }
    // The descriptor is closed here; the mapping holds its own reference to the file.
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

  /// Takes the pages that lie wholly inside bytes [offset, offset + n) out of
  /// this process's memory (madvise MADV_DONTNEED; n past the end is
  /// clipped). The bytes stay readable: the next access maps them again from
  /// the file (from the page cache, where the kernel keeps them while memory
  /// allows). Safe because the mapping is private and read-only: no page of
  /// it was ever written, so none holds anything the file does not.
  ///
  /// Why: a reader that passes once over a large part of the file (the
  /// parser of a 100 MB safetensors header) would otherwise keep every page
  /// it touched resident, on top of what it builds from them, until the
  /// file is unmapped (issue 23: 2.6 times the file at peak, against 1.7
  /// without the header's pages). Advice only: where the platform has no
  /// MADV_DONTNEED, or the call fails, the pages stay, as before.
  void release(std::size_t offset, std::size_t n) const noexcept {
#if defined(MADV_DONTNEED)
    if (data_ == nullptr || offset >= size_) return;
    n = n < size_ - offset ? n : size_ - offset;
    const long page_size = ::sysconf(_SC_PAGESIZE);
    if (page_size <= 0) return;
    const auto page = static_cast<std::size_t>(page_size);
    // Whole pages only: the first page boundary at or after offset (the
    // mapping starts on one) up to the last at or before offset + n.
    const std::size_t begin = (offset + page - 1) / page * page;
    const std::size_t end = (offset + n) / page * page;
    if (begin >= end) return;
    (void)::madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_DONTNEED);
#else
    (void)offset;
    (void)n;
#endif
  }

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
