// The one file of each model-level test program that includes
// tools/llama/instantiate.hpp (tests/CMakeLists.txt: the object library
// oq_model_test_instantiations): it compiles llama::detail_methods::
// quantize_layer once, which the tests' own files, built with
// OQ_LLAMA_EXTERN_TEMPLATES, declare extern.
#include "../tools/llama/instantiate.hpp"
