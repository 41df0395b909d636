// oq/instantiate.hpp: oq's costliest template instantiations, compiled once
// for a whole program instead of in every file that uses them.
//
//   // oq_instantiations.cpp: the only file of the program that includes this
//   #include <oq/instantiate.hpp>
//
//   # every other file that includes oq:
//   target_compile_definitions(app PRIVATE OQ_EXTERN_TEMPLATES)
//
// Under OQ_EXTERN_TEMPLATES oq's headers declare the instantiations below
// `extern template`: a file that calls, say, greedy_block_rotation then
// neither instantiates nor compiles Eigen's SVD, and the linker takes it
// from the file that includes this header. Without the macro nothing
// changes: each file instantiates what it calls, as from any header-only
// library, and the linker keeps one copy. Either way the code, and so every
// result, is the same. A program built with the macro that links no file
// including this header fails to link (undefined
// oq::transform::detail_rotation::project_orthogonal<...>).
//
// Why these: they are the heaviest code behind oq's calls, measured with
// GCC 12 -O2 (bench/compile_cost.sh, bench/RESULTS.md):
//   - detail_rotation::project_orthogonal<Eigen::MatrixXd>, the polar factor
//     behind nearest_orthogonal, greedy_block_rotation and DuQuant
//     calibration: Eigen::BDCSVD with JacobiSVD, ColPivHouseholderQR and
//     the bidiagonalisation under it;
//   - detail_gptq::upper_inverse_factor_in_place<Eigen::MatrixXd>, GPTQ's
//     inverse Cholesky factor (Eigen::LLT and the blocked triangular
//     inverse), behind every GptqFactor.
// Together 26 of the 45 CPU seconds bench/compile_cost_program.cpp (DuQuant
// calibration and GPTQ) takes; this header alone takes 29 s, once.
// Include it in exactly one file: an explicit instantiation definition may
// appear once in a program.
#pragma once

#include <oq/quant/gptq.hpp>
#include <oq/transform/duquant_rotation.hpp>

#include <Eigen/Core>

template void oq::transform::detail_rotation::project_orthogonal<Eigen::MatrixXd>(Eigen::MatrixXd&);
template void oq::quant::detail_gptq::upper_inverse_factor_in_place<Eigen::MatrixXd>(Eigen::MatrixXd&, double);
