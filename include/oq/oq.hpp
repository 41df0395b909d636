// oq/oq.hpp: umbrella header for oq's host API (everything but oq/cuda/).
#pragma once

#include <oq/analysis.hpp>
#include <oq/config.hpp>
#include <oq/core/quant_math.hpp>
#include <oq/core/rounding.hpp>
#include <oq/cpu.hpp>
#include <oq/duquant.hpp>
#include <oq/hadamard.hpp>
#include <oq/int4.hpp>
#include <oq/io.hpp>
#include <oq/kurtosis.hpp>
#include <oq/quant.hpp>
#include <oq/smoothquant.hpp>
