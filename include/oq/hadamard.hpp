// oq/hadamard.hpp: module header for orthogonal rotations (docs/design.md §5).
//
// An orthogonal M keeps y = X·Wᵀ = (X·M)·(W·M)ᵀ while spreading outlier
// channels over many, which is what makes X·M easier to quantize:
//
//   #include <oq/hadamard.hpp>
//   using namespace oq::transform;
//   hadamard_rows(x);                          // x ← x·H_n/√n in place, n = x.cols() = K·2^m
//   hadamard_rows(w);                          // the weights get the same M (or fold
//   auto m = hadamard_orthogonal<float>(n);    //   the explicit M in offline: w·M)
//   block_hadamard_rows(x, 64);                // block-diagonal, when n has no construction
//   auto rh = RandomizedHadamard::from_seed(n, 0);  // QuaRot's M = D·H_n/√n, D = diag(±1) from a seed
//   rh.apply_rows(x);                          //   x ← x·M (rh.apply_rows(w) for the weights)
//   std::mt19937_64 rng(0);
//   auto q = random_orthogonal<double>(n, rng);  // Haar-random orthogonal, reproducible
#pragma once

#include <oq/transform/hadamard.hpp>
#include <oq/transform/random_orthogonal.hpp>
#include <oq/transform/randomized_hadamard.hpp>
