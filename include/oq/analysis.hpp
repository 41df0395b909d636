// oq/analysis.hpp: module header for outlier analysis (docs/design.md §3): streaming
// per-channel moments, massive-activation and channel-outlier detection, the
// norm-weight channels that trigger outliers, and per-layer reports.
#pragma once

#include <oq/analysis/moments.hpp>
#include <oq/analysis/outliers.hpp>
#include <oq/analysis/report.hpp>
