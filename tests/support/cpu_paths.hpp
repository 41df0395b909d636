// tests/support/cpu_paths.hpp: the CPU kernels' instruction sets that this
// build and this processor run, for the tests that compare every path.
#pragma once

#include <oq/cpu/isa.hpp>

#include <vector>

namespace oq_test {

inline std::vector<oq::cpu::Isa> available_cpu_paths() {
  std::vector<oq::cpu::Isa> out;
  for (oq::cpu::Isa isa : {oq::cpu::Isa::kScalar, oq::cpu::Isa::kAvx2, oq::cpu::Isa::kAvx512Vnni, oq::cpu::Isa::kNeonDot})
    if (oq::cpu::isa_supported(isa)) out.push_back(isa);
  return out;
}

}  // namespace oq_test
