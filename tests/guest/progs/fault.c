/* Touches an unmapped address: the kit's page-fault handler must report
 * "EXCEPTION vector 14" and "RESULT FAIL exception 14" (TestGuestFailureIsReported). */
#include "guest.h"

int main(void) { return *(volatile int *)0xdead0000000UL; }
