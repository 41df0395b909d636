#include <oq/config.hpp>

#include <doctest/doctest.h>

TEST_CASE("version macros and constant agree") {
  static_assert(oq::kVersion.major == OQ_VERSION_MAJOR);
  static_assert(oq::kVersion.minor == OQ_VERSION_MINOR);
  static_assert(oq::kVersion.patch == OQ_VERSION_PATCH);
  CHECK(OQ_VERSION == OQ_VERSION_MAJOR * 10000 + OQ_VERSION_MINOR * 100 + OQ_VERSION_PATCH);
  CHECK(OQ_HAS_CUDA == 0);  // a .cpp compiled by the host compiler
}
