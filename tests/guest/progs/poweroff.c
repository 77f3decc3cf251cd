/* poweroff: prove the kit's path end to end: PVH entry, long mode, CPL3
 * with port I/O, the command line from hvm_start_info, then ACPI S5. */
#include "guest.h"

int main(void)
{
	uint16_t cs;
	uint64_t flags;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	__asm__ volatile("pushfq; popq %0" : "=r"(flags));
	printf("cpl=%u if=%lu cmdline=%s\n", cs & 3, (flags >> 9) & 1, guest_cmdline());
	CHECK((cs & 3) == 3, "running at CPL%u", cs & 3);
	CHECK(strncmp(guest_cmdline(), "petrel-test", 11) == 0, "cmdline '%s'", guest_cmdline());
	/* Optional arguments exercise guest_arg: want=N must match n=N. */
	if (guest_arg("want")) {
		uint64_t want = guest_arg_u64("want", 0), n = guest_arg_u64("n", 7);
		printf("arg want=%lu n=%lu flag=%s\n", want, n, guest_arg("flag") ? "yes" : "no");
		CHECK(want == n, "want %lu but n=%lu", want, n);
		CHECK(guest_arg("absent") == NULL, "an absent key was found");
	}
	return 0;
}
