// The one file of instantiate_test that includes <oq/instantiate.hpp>: it
// compiles the instantiations instantiate_test.cpp declares extern (both
// files are built with OQ_EXTERN_TEMPLATES; the definition follows the
// declaration, as the standard allows).
#include <oq/instantiate.hpp>
