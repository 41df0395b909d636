// oq/int4.hpp: module header for the packed INT4 format (host and device).
#pragma once

#include <oq/core/int4.hpp>
#include <oq/format/int4_row.hpp>
