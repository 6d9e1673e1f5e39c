/* For a fragment of statements: the body of a function returning int. */
#include <tether/tether.h>

int fragment(void);

int fragment(void)
{
@BLOCK@
    return 0;
}
