// oq/io/format_error.hpp: the exception every oq::io parser throws for a
// malformed file (bad magic, truncated data, a header that does not follow the
// format's spec, sizes that do not add up).
//
// Why its own type: callers (and the fuzz targets in tests/fuzz/) must tell
// "this file is broken" apart from programming errors and I/O failures. It
// derives from std::invalid_argument so code that already catches that keeps
// working. Messages name the file (or "<memory>"), what is wrong and what was
// expected.
#pragma once

#include <stdexcept>

namespace oq::io {

/// A file (or in-memory buffer) that does not follow its format's spec.
struct FormatError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace oq::io
