/* savevm: the guest of vmm's TestSaveRestoreVM, which saves and restores
 * it (vCPU, irqchip, kvmclock, RAM) into new VMs while it runs.
 *
 * With the LAPIC's task priority at 0xf0, so that interrupts stay pending
 * in its IRR (cli is not available at CPL3 on kvm_pvm), it makes two
 * pending: a one-shot LAPIC timer, and IOAPIC pin 5 (level), which the
 * host asserts when told READY. It then counts in %esi and at COUNTER in
 * RAM, checking at every step that both agree and that %r12-%r14 keep
 * their constants, and reports the count on PROGRESS whenever it has no
 * bit of the mask at STEPMASK set (the host sets it: 255, or all ones for
 * no reports), until the host sets FINISH. It reports the count on OPEN (the host deasserts the
 * pin, which stays pending: the IOAPIC's remote IRR), lowers the task
 * priority, and each interrupt must arrive exactly once, only then.
 */
#include "guest.h"

#define PORT_READY 0x510
#define PORT_PROGRESS 0x511
#define PORT_OPEN 0x512
#define PORT_DONE 0x513
#define COUNTER 0x2000UL
#define FINISH 0x2008UL
#define STEPMASK 0x200cUL
#define PIN 5
#define PIN_VECTOR (PIN_VECTOR_FIRST + PIN)
#define TIMER_VECTOR 0x60

static int pending(uint8_t v)
{
	return (mmio_read32(LAPIC_BASE + 0x200 + (v / 32) * 0x10) >> (v % 32)) & 1;
}

/* count runs the counting loop and returns the count, or 0 when the
 * register and RAM counts differ or a constant changed. */
static uint32_t count(void)
{
	uint32_t n;
	__asm__ volatile(
		"movabs $0x5a5a12345a5a1234, %%r12\n\t"
		"movabs $0xdeadbeefcafef00d, %%r13\n\t"
		"movabs $0x0123456789abcdef, %%r14\n\t"
		"xorl %%esi, %%esi\n\t"
		"movl %%esi, 0x2000\n"
		"1:\tcmpl 0x2000, %%esi\n\t"
		"jne 8f\n\t"
		"incl %%esi\n\t"
		"movl %%esi, 0x2000\n\t"
		"testl 0x200c, %%esi\n\t"
		"jnz 2f\n\t"
		"movl %%esi, %%eax\n\t"
		"movw $0x511, %%dx\n\t"
		"outl %%eax, %%dx\n"
		"2:\tcmpl $0, 0x2008\n\t"
		"je 1b\n\t"
		"movabs $0x5a5a12345a5a1234, %%rax\n\t"
		"cmpq %%rax, %%r12\n\t"
		"jne 8f\n\t"
		"movabs $0xdeadbeefcafef00d, %%rax\n\t"
		"cmpq %%rax, %%r13\n\t"
		"jne 8f\n\t"
		"movabs $0x0123456789abcdef, %%rax\n\t"
		"cmpq %%rax, %%r14\n\t"
		"je 9f\n"
		"8:\txorl %%esi, %%esi\n"
		"9:"
		: "=S"(n)
		:
		: "rax", "rdx", "r12", "r13", "r14", "memory", "cc");
	return n;
}

int main(void)
{
	lapic_enable();
	mmio_write32(LAPIC_TPR, 0xf0);
	mmio_write32(LAPIC_BASE + 0x3e0, 0xb);		/* timer: divide by 1 */
	mmio_write32(LAPIC_BASE + 0x320, TIMER_VECTOR); /* one-shot */
	mmio_write32(LAPIC_BASE + 0x380, 1000);
	for (int i = 0; i < 100000000 && !pending(TIMER_VECTOR); i++)
		cpu_relax();
	CHECK(pending(TIMER_VECTOR), "the LAPIC timer never became pending");
	ioapic_route(PIN, PIN_VECTOR, 1);
	outl(PORT_READY, 0);
	CHECK(pending(PIN_VECTOR), "pin %d is not pending after READY", PIN);

	uint32_t n = count();
	CHECK(n != 0, "register and RAM counts differ, or r12-r14 changed");
	CHECK(irq_count[TIMER_VECTOR] == 0 && irq_count[PIN_VECTOR] == 0, "an interrupt arrived through TPR 0xf0");
	CHECK(pending(TIMER_VECTOR) && pending(PIN_VECTOR), "the interrupts are no longer pending");

	uint32_t remote_irr = 1u << 14;
	CHECK(ioapic_read(0x10 + 2 * PIN) & remote_irr, "pin %d's remote IRR is clear before the EOI", PIN);
	outl(PORT_OPEN, n);
	mmio_write32(LAPIC_TPR, 0);
	CHECK(wait_irq(PIN_VECTOR, 1, 10) == 0, "pin %d's interrupt did not arrive", PIN);
	CHECK(wait_irq(TIMER_VECTOR, 1, 10) == 0, "the timer interrupt did not arrive");
	for (int i = 0; i < 1000000; i++)
		cpu_relax();
	CHECK(irq_count[PIN_VECTOR] == 1 && irq_count[TIMER_VECTOR] == 1, "interrupts taken: pin %u, timer %u",
	      irq_count[PIN_VECTOR], irq_count[TIMER_VECTOR]);
	CHECK(!(ioapic_read(0x10 + 2 * PIN) & remote_irr), "pin %d's remote IRR is set after the EOI", PIN);
	CHECK(*(volatile uint32_t *)COUNTER == n, "RAM count %u, register %u", *(volatile uint32_t *)COUNTER, n);
	outl(PORT_DONE, n);
	printf("counted to %u, took both interrupts after\n", n);
	return 0;
}
