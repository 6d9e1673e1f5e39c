/* For declarations quoted from the public header: they must agree with it
   (a redeclaration with another type does not compile). */
#include <tether/tether.h>

@BLOCK@
