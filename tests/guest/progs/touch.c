/* touch: writes a pattern into mib= MiB of RAM from 16 MiB up (the rest of
 * RAM stays untouched, zero), prints READY, then waits at CPL3 until the
 * host stops it. The guest shape of scripts/bench-savevm.sh: how long a
 * savevm/loadvm of it takes and how many bytes it writes, Petrel against
 * QEMU. */
#include "guest.h"

int main(void)
{
	uint64_t mib = guest_arg_u64("mib", 128);
	volatile uint64_t *p = (volatile uint64_t *)(16UL << 20);
	for (uint64_t i = 0; i < (mib << 20) / 8; i += 512) /* one word per 4 KiB page */
		p[i] = i * 0x9e3779b97f4a7c15UL + 1;
	printf("READY touched=%lu MiB\n", mib);
	for (;;)
		cpu_relax();
	return 0;
}
