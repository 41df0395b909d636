// tools/llama/instantiate.hpp: the costliest instantiations of tools/llama,
// compiled once for a program instead of in each of its files, as
// <oq/instantiate.hpp> does for the library:
//
//   // the one file of the program that includes this
//   #include "tools/llama/instantiate.hpp"
//
//   # every file of the program that includes tools/llama:
//   target_compile_definitions(app PRIVATE OQ_LLAMA_EXTERN_TEMPLATES)
//
// Under OQ_LLAMA_EXTERN_TEMPLATES methods.hpp declares
// detail_methods::quantize_layer<float> and <double> `extern template`, so
// a file that quantizes a layer compiles none of the methods behind it; the
// linker takes them from the file that includes this header. Without the
// macro nothing changes. The code, and so every result, is the same either
// way. Include it in exactly one file of a program.
#pragma once

#include "methods.hpp"

#include <string>

template llama::QuantizedLayer<float> llama::detail_methods::quantize_layer<float>(
    const llama::MethodSpec&, const std::string&, const llama::LayerWeights<float>&, const llama::LinearInputs<float>&,
    const llama::QuantOptions&);
template llama::QuantizedLayer<double> llama::detail_methods::quantize_layer<double>(
    const llama::MethodSpec&, const std::string&, const llama::LayerWeights<double>&,
    const llama::LinearInputs<double>&, const llama::QuantOptions&);
