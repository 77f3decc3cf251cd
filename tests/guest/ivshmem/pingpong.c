/* pingpong: one of two guests sharing an ivshmem-doorbell region.
 *
 * Command line: "role=a|b mode=msix|pin rounds=N [exits=1]".
 * B publishes its peer ID in the shared memory and waits for a doorbell.
 * A publishes its ID, waits for B's, writes a pattern into BAR2 and rings
 * B (vector 0). B takes the interrupt (MSI-X vector 0, or INTA# through the
 * IOAPIC with the status register), checks the pattern, writes an ack and
 * rings A back. Then they ping-pong rounds more times and A prints the TSC
 * cycles per round trip.
 *
 * INTA# is routed edge-triggered: the kit's handler only counts and EOIs,
 * so a level-triggered entry would re-deliver until CPL3 reads the status.
 * Each interrupt still proves the pin went up, and the status register
 * read (1, then 0 after read-to-clear) proves the device's side. */
#include "guest.h"

#define REG_MASK 0
#define REG_STATUS 4
#define REG_IVPOS 8
#define REG_DOORBELL 12

/* Shared memory layout (offsets in BAR2). */
#define SHM_HOST_MAGIC 0x000 /* written by the host test before boot */
#define SHM_A_ID 0x100	      /* peer ID + 1 */
#define SHM_B_ID 0x104
#define SHM_ACK 0x108
#define SHM_PATTERN 0x1000
#define PATTERN_WORDS 1024
#define ACK 0xb0b0600dU

static uint64_t bar0, bar2;
static int pin, vector, gsi;

static const char *arg(const char *key)
{
	const char *s = guest_cmdline();
	size_t n = strlen(key);
	for (; *s; s++)
		if ((s == guest_cmdline() || s[-1] == ' ') && !strncmp(s, key, n) && s[n] == '=')
			return s + n + 1;
	return "";
}

static int num(const char *s)
{
	int v = 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (*s++ - '0');
	return v;
}

/* tsc_hz measures the TSC against the ACPI PM timer (3.579545 MHz,
 * 24 bits) over 100 ms. */
static uint64_t tsc_hz(void)
{
	uint32_t t0 = inl(0x608) & 0xffffff;
	uint64_t c0 = rdtsc();
	while (((inl(0x608) - t0) & 0xffffff) < 357954)
		;
	return (rdtsc() - c0) * 10;
}

static uint32_t pattern(int i) { return 0xa5000000u ^ (uint32_t)i * 2654435761u; }

static void ring(uint32_t peer) { mmio_write32(bar0 + REG_DOORBELL, peer << 16 | 0); }

static uint32_t wait_shm(uint64_t off)
{
	uint64_t start = rdtsc();
	uint32_t v;
	while (!(v = mmio_read32(bar2 + off))) {
		CHECK(rdtsc() - start < 30UL * 3000000000UL, "peer never wrote shm offset %x", (unsigned)off);
		cpu_relax();
	}
	return v;
}

/* take waits for the count'th interrupt; with the pin, the status register
 * must then read 1 and be cleared by that read. */
static int exits;

static void take(uint32_t count)
{
	if (exits) {
		/* Leave the guest on every spin (a port write the VMM ignores),
		 * so an injected interrupt is taken at the next entry. */
		uint64_t start = rdtsc();
		while (irq_count[vector] < count) {
			CHECK(rdtsc() - start < 30UL * 3000000000UL, "interrupt %u on vector %x never came", count, vector);
			outb(0x80, 0);
		}
	}
	CHECK(wait_irq(vector, count, 30) == 0, "interrupt %u on vector %x never came", count, vector);
	if (pin) {
		uint32_t st = mmio_read32(bar0 + REG_STATUS);
		CHECK(st == 1, "status %u after a pin interrupt", st);
		CHECK(mmio_read32(bar0 + REG_STATUS) == 0, "status not cleared by reading it");
	}
}

int main(void)
{
	int a = arg("role")[0] == 'a';
	pin = !strncmp(arg("mode"), "pin", 3);
	int rounds = num(arg("rounds"));
	exits = arg("exits")[0] == '1';
	int dev = pci_find(0x1af4, 0x1110, 0);
	CHECK(dev >= 0, "no ivshmem device");
	pci_enable(dev);
	bar0 = pci_bar(dev, 0, NULL);
	bar2 = pci_bar(dev, 2, NULL);
	uint32_t me = mmio_read32(bar0 + REG_IVPOS);
	CHECK(me != 0xffffffff, "IVPosition is -1: no ID from the server");
	CHECK(mmio_read32(bar2 + SHM_HOST_MAGIC) == 0x49565348, "host magic missing from BAR2");
	lapic_enable();
	if (pin) {
		gsi = 16 + dev % 8;
		vector = PIN_VECTOR_FIRST;
		ioapic_route(gsi, vector, 0);
		mmio_write32(bar0 + REG_MASK, 1);
		CHECK(mmio_read32(bar0 + REG_MASK) == 1, "mask does not read back");
	} else {
		vector = MSI_VECTOR_FIRST;
		CHECK(msix_set_vector(dev, 0, vector) == 0, "no MSI-X vector 0");
		CHECK(msix_enable(dev) == 0, "cannot enable MSI-X");
	}
	printf("IVSHMEM role=%s id=%u mode=%s bar0=%lx bar2=%lx\n", a ? "a" : "b", me, pin ? "pin" : "msix", bar0, bar2);
	if (a) {
		mmio_write32(bar2 + SHM_A_ID, me + 1);
		uint32_t b = wait_shm(SHM_B_ID) - 1;
		for (int i = 0; i < PATTERN_WORDS; i++)
			mmio_write32(bar2 + SHM_PATTERN + 4 * i, pattern(i));
		mb();
		ring(b);
		take(1);
		CHECK(mmio_read32(bar2 + SHM_ACK) == ACK, "no ack from B");
		uint64_t t0 = rdtsc();
		for (int i = 0; i < rounds; i++) {
			ring(b);
			take(i + 2);
		}
		uint64_t dt = rdtsc() - t0;
		if (rounds) {
			uint64_t hz = tsc_hz();
			printf("PINGPONG rounds=%d cycles=%lu tsc_hz=%lu ns_per_round=%lu\n", rounds, dt, hz,
			       dt * 1000 / (hz / 1000000) / rounds);
		}
	} else {
		mmio_write32(bar2 + SHM_B_ID, me + 1);
		take(1);
		uint32_t apeer = wait_shm(SHM_A_ID) - 1;
		for (int i = 0; i < PATTERN_WORDS; i++) {
			uint32_t v = mmio_read32(bar2 + SHM_PATTERN + 4 * i);
			CHECK(v == pattern(i), "pattern word %d is %x, want %x", i, v, pattern(i));
		}
		mmio_write32(bar2 + SHM_ACK, ACK);
		mb();
		ring(apeer);
		for (int i = 0; i < rounds; i++) {
			take(i + 2);
			ring(apeer);
		}
	}
	/* Nothing else may have fired. */
	CHECK(irq_count[vector] == (uint32_t)rounds + 1, "%u interrupts, want %d", irq_count[vector], rounds + 1);
	return 0;
}
