// oq/detail/eigen_types.hpp: the dense Eigen matrix types oq's host modules
// name in their interfaces, defined once (oq::transform and oq::io bring
// them in by a using-declaration).
//
//   DenseMatrix<Scalar>     Eigen's default (column-major) dynamic matrix:
//                           rotations, Hessians, anything multiplied whole
//   RowMajorMatrix<Scalar>  a row-major dynamic matrix: activations and
//                           weights as tokens × channels / outputs × inputs,
//                           whose rows are contiguous, as files and kernels
//                           store them
#pragma once

#include <Eigen/Core>

namespace oq::detail {

template <class Scalar>
using DenseMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace oq::detail
