/* guest.c: runtime for Petrel's guest test programs (see guest.h). */
#include "guest.h"

volatile uint32_t irq_count[256];

extern char __bss_start[], __bss_end[];
int main(void);

/* _cstart is the first code at CPL3 (start.S irets here). */
void _cstart(void) __attribute__((noreturn, used));
void _cstart(void)
{
	memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
	poweroff(main());
}

void *memset(void *d, int c, size_t n)
{
	uint8_t *p = d;
	while (n--)
		*p++ = (uint8_t)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	uint8_t *p = d;
	const uint8_t *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *p = a, *q = b;
	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p < *q ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (uint8_t)*a < (uint8_t)*b ? -1 : 1;
		if (!*a)
			return 0;
	}
	return 0;
}

/* ---- COM1 ---- */

/* at_line_start lets result lines begin a line whatever was printed before. */
static int at_line_start = 1;

static void new_line(void)
{
	if (!at_line_start)
		putchar('\n');
}

void putchar(int c)
{
	at_line_start = c == '\n';
	/* LSR bit 5: transmit holding register empty. Bounded: a UART that
	 * never says ready still gets the byte. */
	for (int i = 0; i < 1000 && !(inb(COM1_BASE + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1_BASE, (uint8_t)c);
}

void puts(const char *s)
{
	while (*s)
		putchar(*s++);
	putchar('\n');
}

static void put_num(uint64_t v, int base, int upper, int width, char pad, int neg)
{
	char buf[24];
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	int n = 0;
	do {
		buf[n++] = digits[v % (uint64_t)base];
		v /= (uint64_t)base;
	} while (v);
	if (neg)
		width--;
	if (neg && pad == '0')
		putchar('-');
	for (int i = n; i < width; i++)
		putchar(pad);
	if (neg && pad != '0')
		putchar('-');
	while (n)
		putchar(buf[--n]);
}

int vprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			putchar(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 'c':
			putchar(va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			for (int i = (int)strlen(s); i < width; i++)
				putchar(' ');
			while (*s)
				putchar(*s++);
			break;
		}
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			put_num(v < 0 ? -(uint64_t)v : (uint64_t)v, 10, 0, width, pad, v < 0);
			break;
		}
		case 'u':
			put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, uint32_t), 10, 0, width, pad, 0);
			break;
		case 'x':
		case 'X':
			put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, uint32_t), 16, *fmt == 'X', width, pad, 0);
			break;
		case 'p':
			putchar('0');
			putchar('x');
			put_num((uint64_t)va_arg(ap, void *), 16, 0, width, pad, 0);
			break;
		case '%':
			putchar('%');
			break;
		case 0:
			return 0;
		default:
			putchar('%');
			putchar(*fmt);
		}
	}
	return 0;
}

int printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	return 0;
}

/* ---- result and power-off ---- */

static void __attribute__((noreturn)) acpi_s5(void)
{
	/* PM1a_CNT: SLP_TYP = 5 (\_S5), SLP_EN. */
	outw(PM1A_CNT, (5 << 10) | (1 << 13));
	/* Under QEMU (development only) \_S5 is SLP_TYP 0. */
	outw(PM1A_CNT, (0 << 10) | (1 << 13));
	for (;;)
		cpu_relax();
}

void poweroff(int code)
{
	new_line();
	if (code == 0)
		printf("RESULT PASS\n");
	else
		printf("RESULT FAIL exit code %d\n", code);
	acpi_s5();
}

void fail(const char *fmt, ...)
{
	va_list ap;
	new_line();
	printf("RESULT FAIL ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	acpi_s5();
}

/* guest_exception runs at CPL0 from start.S for vectors 0-31. frame:
 * vector, error code, rip, cs, rflags, rsp, ss. */
void guest_exception(uint64_t *frame) __attribute__((noreturn, used));
void guest_exception(uint64_t *frame)
{
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	new_line();
	printf("EXCEPTION vector %lu error 0x%lx rip 0x%lx cs 0x%lx rflags 0x%lx rsp 0x%lx cr2 0x%lx\n",
	       frame[0], frame[1], frame[2], frame[3], frame[4], frame[5], cr2);
	fail("exception %lu at rip %lx", frame[0], frame[2]);
}

/* hvm_start_info: cmdline_paddr at offset 24 (start_info.h, version >= 0). */
const char *guest_cmdline(void)
{
	if (!pvh_start_info || *(uint32_t *)pvh_start_info != 0x336ec578)
		return "";
	uint64_t p = *(uint64_t *)(pvh_start_info + 24);
	return p ? (const char *)p : "";
}

const char *guest_arg(const char *key)
{
	static char val[256];
	size_t klen = strlen(key);
	const char *p = guest_cmdline();
	while (*p) {
		while (*p == ' ')
			p++;
		const char *w = p;
		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - w) >= klen && strncmp(w, key, klen) == 0 && (w[klen] == '=' || w + klen == p)) {
			const char *v = w + klen + (w[klen] == '=');
			size_t n = v < p ? (size_t)(p - v) : 0;
			if (n >= sizeof(val))
				n = sizeof(val) - 1;
			memcpy(val, v, n);
			val[n] = 0;
			return val;
		}
	}
	return NULL;
}

uint64_t guest_arg_u64(const char *key, uint64_t def)
{
	const char *v = guest_arg(key);
	if (!v || !*v)
		return def;
	uint64_t x = 0;
	int base = 10;
	if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
		base = 16;
		v += 2;
	}
	for (; *v; v++) {
		int d = *v >= '0' && *v <= '9' ? *v - '0' : *v >= 'a' && *v <= 'f' ? *v - 'a' + 10 : *v >= 'A' && *v <= 'F' ? *v - 'A' + 10 : 99;
		if (d >= base)
			return def;
		x = x * (uint64_t)base + (uint64_t)d;
	}
	return x;
}

/* ---- PCI configuration mechanism 1 ---- */

static void pci_addr(int bus, int dev, int fn, int off)
{
	outl(0xcf8, 0x80000000u | (uint32_t)bus << 16 | (uint32_t)dev << 11 | (uint32_t)fn << 8 | (off & 0xfc));
}

uint32_t pci_read32(int bus, int dev, int fn, int off) { pci_addr(bus, dev, fn, off); return inl(0xcfc); }
uint16_t pci_read16(int bus, int dev, int fn, int off) { pci_addr(bus, dev, fn, off); return inw(0xcfc + (off & 2)); }
uint8_t pci_read8(int bus, int dev, int fn, int off) { pci_addr(bus, dev, fn, off); return inb(0xcfc + (off & 3)); }
void pci_write32(int bus, int dev, int fn, int off, uint32_t v) { pci_addr(bus, dev, fn, off); outl(0xcfc, v); }
void pci_write16(int bus, int dev, int fn, int off, uint16_t v) { pci_addr(bus, dev, fn, off); outw(0xcfc + (off & 2), v); }
void pci_write8(int bus, int dev, int fn, int off, uint8_t v) { pci_addr(bus, dev, fn, off); outb(0xcfc + (off & 3), v); }

int pci_find(uint16_t vendor, uint16_t device, int index)
{
	for (int dev = 0; dev < 32; dev++) {
		uint32_t id = pci_read32(0, dev, 0, 0);
		if ((id & 0xffff) != vendor)
			continue;
		if (device != 0xffff && (id >> 16) != device)
			continue;
		if (index-- == 0)
			return dev;
	}
	return -1;
}

int pci_find_cap(int dev, uint8_t id, int from)
{
	if (!(pci_read16(0, dev, 0, 0x06) & 0x10)) /* status: capability list */
		return 0;
	int off = from ? pci_read8(0, dev, 0, from + 1) : pci_read8(0, dev, 0, 0x34);
	for (int n = 0; off >= 0x40 && n < 48; n++) { /* bounded: a looping list ends */
		off &= 0xfc;
		if (pci_read8(0, dev, 0, off) == id)
			return off;
		off = pci_read8(0, dev, 0, off + 1);
	}
	return 0;
}

uint64_t pci_bar(int dev, int n, int *io)
{
	uint32_t lo = pci_read32(0, dev, 0, 0x10 + 4 * n);
	if (io)
		*io = lo & 1;
	if (lo & 1)
		return lo & ~3u;
	uint64_t a = lo & ~0xfu;
	if (((lo >> 1) & 3) == 2 && n < 5)
		a |= (uint64_t)pci_read32(0, dev, 0, 0x10 + 4 * (n + 1)) << 32;
	return a;
}

void pci_enable(int dev)
{
	pci_write16(0, dev, 0, 0x04, pci_read16(0, dev, 0, 0x04) | 0x7);
}

/* ---- LAPIC, IOAPIC, MSI-X ---- */

void lapic_enable(void)
{
	mmio_write32(LAPIC_TPR, 0);
	mmio_write32(LAPIC_SVR, 0x100 | SPURIOUS_VECTOR);
}

uint32_t lapic_id(void) { return mmio_read32(LAPIC_ID) >> 24; }

void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(IOAPIC_BASE, reg);
	mmio_write32(IOAPIC_BASE + 0x10, v);
}

uint32_t ioapic_read(uint32_t reg)
{
	mmio_write32(IOAPIC_BASE, reg);
	return mmio_read32(IOAPIC_BASE + 0x10);
}

void ioapic_route(int gsi, uint8_t vector, int level)
{
	/* Redirection entry gsi: registers 0x10+2*gsi (low) and +1 (high).
	 * Fixed delivery, physical destination, active high. */
	ioapic_write(0x11 + 2 * gsi, lapic_id() << 24);
	ioapic_write(0x10 + 2 * gsi, vector | (level ? 1u << 15 : 0));
}

void ioapic_mask(int gsi)
{
	ioapic_write(0x10 + 2 * gsi, ioapic_read(0x10 + 2 * gsi) | 1u << 16);
}

int wait_irq(int vector, uint32_t count, int seconds)
{
	uint64_t start = rdtsc(), limit = (uint64_t)seconds * 3000000000UL;
	while (irq_count[vector] < count) {
		if (rdtsc() - start > limit)
			return -1;
		cpu_relax();
	}
	return 0;
}

static uint64_t msix_table(int dev, int cap)
{
	uint32_t t = pci_read32(0, dev, 0, cap + 4);
	return pci_bar(dev, t & 7, NULL) + (t & ~7u);
}

int msix_enable(int dev)
{
	int cap = pci_find_cap(dev, 0x11, 0);
	if (!cap)
		return -1;
	/* Message control: bit 15 enable, bit 14 function mask. */
	uint16_t ctl = pci_read16(0, dev, 0, cap + 2);
	pci_write16(0, dev, 0, cap + 2, (ctl | 0x8000) & ~0x4000);
	return (pci_read16(0, dev, 0, cap + 2) & 0xc000) == 0x8000 ? 0 : -1;
}

int msix_set_vector(int dev, int entry, uint8_t vector)
{
	int cap = pci_find_cap(dev, 0x11, 0);
	if (!cap)
		return -1;
	int size = (pci_read16(0, dev, 0, cap + 2) & 0x7ff) + 1;
	if (entry >= size)
		return -1;
	uint64_t e = msix_table(dev, cap) + 16 * (uint64_t)entry;
	mmio_write32(e + 0, (uint32_t)MSI_ADDR_BASE | lapic_id() << 12);
	mmio_write32(e + 4, 0);
	mmio_write32(e + 8, vector);
	mmio_write32(e + 12, 0); /* unmasked */
	return 0;
}
