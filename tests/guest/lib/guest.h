/*
 * guest.h: the library for Petrel's guest test programs (see ../README.md).
 *
 * A program defines int main(void). It runs at CPL3 in long mode with
 * IF=1 and port I/O allowed (IOPL=3, and a TSS I/O bitmap permitting every
 * port for kvm_pvm, which forces IOPL to 0 in user mode), identity-mapped
 * (virtual == guest physical), every page user-accessible, so port I/O and
 * MMIO work directly. cli/sti are not available (kvm_pvm keeps IF=1 at CPL3). main
 * returning 0 reports "RESULT PASS"; anything else, a failed CHECK, fail()
 * or a CPU exception reports "RESULT FAIL ..." on COM1. Either way the
 * program then powers off through ACPI PM1a_CNT (S5).
 */
#ifndef PETREL_GUEST_H
#define PETREL_GUEST_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned long size_t;
typedef unsigned long uintptr_t;
#define NULL ((void *)0)

#include <stdarg.h>

/* Platform addresses (docs/ARCHITECTURE.md). */
#define COM1_BASE 0x3f8
#define PM1A_CNT 0x604
#define IOAPIC_BASE 0xfec00000UL
#define LAPIC_BASE 0xfee00000UL
#define LAPIC_EOI (LAPIC_BASE + 0xb0)
#define LAPIC_SVR (LAPIC_BASE + 0xf0)
#define LAPIC_TPR (LAPIC_BASE + 0x80)
#define LAPIC_ID (LAPIC_BASE + 0x20)
#define SPURIOUS_VECTOR 0xff
#define MSI_ADDR_BASE 0xfee00000UL

/* Vectors the test programs use: MSI/MSI-X 0x30..0x4f, IOAPIC pins 0x50..0x5f. */
#define MSI_VECTOR_FIRST 0x30
#define MSI_VECTOR_LAST 0x4f
#define PIN_VECTOR_FIRST 0x50

/* irq_count[v] counts interrupts taken on vector v (>= 32) since boot. */
extern volatile uint32_t irq_count[256];
/* The hvm_start_info the loader passed in %ebx. */
extern uint64_t pvh_start_info;

/* Port I/O. */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* MMIO: volatile, exactly one access of the given width. */
static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline uint64_t mmio_read64(uint64_t a) { return *(volatile uint64_t *)a; }
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline void mmio_write64(uint64_t a, uint64_t v) { *(volatile uint64_t *)a = v; }

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
/* mfence is a full barrier for the virtqueue's publish/consume order. */
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline uint64_t rdtsc(void) {
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* Memory and strings. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);

/* COM1 output, polling LSR.THRE (bounded). printf knows %c %s %d %i %u %x
 * %X %p %% with l/ll, width and 0-padding. */
void putchar(int c);
void puts(const char *s);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);

/* Result reporting. poweroff(0) prints "RESULT PASS", poweroff(n) prints
 * "RESULT FAIL exit code n"; fail() prints "RESULT FAIL <message>". All
 * then write SLP_TYP=5|SLP_EN to PM1a_CNT and never return. */
void poweroff(int code) __attribute__((noreturn));
void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			printf("CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			fail(__VA_ARGS__);                                      \
		}                                                               \
	} while (0)

/* The kernel command line from hvm_start_info ("" if none). */
const char *guest_cmdline(void);
/* guest_arg returns the value of "key=value" on the command line (a copy,
 * valid until the next call), "" for a bare "key", NULL when absent. */
const char *guest_arg(const char *key);
/* guest_arg_u64 parses guest_arg(key) as decimal or 0x hex; def if absent. */
uint64_t guest_arg_u64(const char *key, uint64_t def);

/* PCI configuration mechanism 1 (bus 0..255, dev 0..31, fn 0..7). */
uint32_t pci_read32(int bus, int dev, int fn, int off);
uint16_t pci_read16(int bus, int dev, int fn, int off);
uint8_t pci_read8(int bus, int dev, int fn, int off);
void pci_write32(int bus, int dev, int fn, int off, uint32_t v);
void pci_write16(int bus, int dev, int fn, int off, uint16_t v);
void pci_write8(int bus, int dev, int fn, int off, uint8_t v);
/* pci_find returns the slot of the index'th function 0 on bus 0 with that
 * vendor/device (0xffff = any device), or -1. */
int pci_find(uint16_t vendor, uint16_t device, int index);
/* pci_find_cap returns the config offset of the first capability with id
 * at or after from (0 = from the list head), or 0. */
int pci_find_cap(int dev, uint8_t id, int from);
/* pci_bar returns BAR n's address (64-bit BARs combined), *io = 1 for I/O. */
uint64_t pci_bar(int dev, int n, int *io);
/* pci_enable sets memory, I/O and bus-master decoding in the command register. */
void pci_enable(int dev);

/* Interrupt controllers. */
void lapic_enable(void);
uint32_t lapic_id(void);
void ioapic_write(uint32_t reg, uint32_t v);
uint32_t ioapic_read(uint32_t reg);
/* ioapic_route sends GSI gsi to vector on this CPU: level or edge,
 * active high; ioapic_mask masks it again. */
void ioapic_route(int gsi, uint8_t vector, int level);
void ioapic_mask(int gsi);
/* wait_irq spins at CPL3 until irq_count[vector] >= count or about
 * seconds have passed (TSC at a nominal 3 GHz); 0 on success, -1 on timeout. */
int wait_irq(int vector, uint32_t count, int seconds);

/* MSI-X on a PCI function: enable, program entry n to vector (fixed,
 * edge, this CPU), mask/unmask. */
int msix_enable(int dev);
int msix_set_vector(int dev, int entry, uint8_t vector);

#endif
