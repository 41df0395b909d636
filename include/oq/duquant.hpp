// oq/duquant.hpp: module header for DuQuant (Lin et al., NeurIPS 2024;
// docs/design.md §6): everything an engine needs to calibrate and apply the dual
// transformation M = R₁·P·R₂ (after optional smoothing) to its layers, with
// one rotation per stage shared by the blocks (the released code's) or one
// per block (calibrate_duquant_blockwise).
//
//   #include <oq/duquant.hpp>
//   using namespace oq::duquant;
//   auto t = calibrate_duquant(x_calib, DuQuantOptions{}, q_primes);  // per linear input
//   w = t.fold_into_weight(w);                                         // offline
//   x_hat = t.apply(x);                                                // run time
//   save_duquant(file, t);                                             // keep it
//
// oq::duquant is this module's name for the namespace its parts live in,
// oq::transform (beside the other transforms: smoothing, Hadamard,
// random rotations), so a user who included oq/duquant.hpp finds the names
// where the header says: oq::duquant::calibrate_duquant and
// oq::transform::calibrate_duquant are one function, and either spelling
// may be used.
#pragma once

#include <oq/transform/duquant.hpp>
#include <oq/transform/duquant_blockwise.hpp>
#include <oq/transform/duquant_io.hpp>
#include <oq/transform/duquant_rotation.hpp>
#include <oq/transform/random_orthogonal.hpp>
#include <oq/transform/smoothing.hpp>
#include <oq/transform/zigzag.hpp>

namespace oq {
namespace duquant = transform;
}  // namespace oq
