// The one file of each test program that includes <oq/instantiate.hpp>
// (tests/CMakeLists.txt: the object library oq_test_instantiations, linked
// into every test): it compiles the instantiations the tests' own files,
// built with OQ_EXTERN_TEMPLATES, declare extern. It is built with the macro
// too: the definition follows the declaration, as the standard allows.
#include <oq/instantiate.hpp>
