/* Prints a marker: TestBzImagePVHBoot swaps it into the decompressed-kernel
 * cache to prove a second boot runs the cached vmlinux. */
#include "guest.h"

int main(void)
{
	printf("FROM-THE-KERNEL-CACHE\n");
	return 0;
}
