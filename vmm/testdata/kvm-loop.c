/*
 * kvm-loop: the smallest KVM run loop that runs bench-guest.S, as the
 * baseline for scripts/bench-exit.sh. It loads the guest file flat at
 * 0x100000, enters e_entry in 32-bit protected mode with paging off (as
 * Petrel's PVH path does), prints COM1 output, ignores other port writes,
 * reads unbacked MMIO as all ones, and exits on the ACPI S5 write.
 *
 *   kvm-loop GUEST      run the guest
 *   kvm-loop --tsc-khz  print the TSC frequency (calibrated for 200 ms)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (64 << 20)
#define LOAD_ADDR 0x100000

static void die(const char *what) { perror(what); exit(1); }

static uint64_t rdtsc(void) {
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void seg(struct kvm_segment *s, uint16_t sel, int type) {
	memset(s, 0, sizeof(*s));
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->db = 1;
	s->g = 1;
}

int main(int argc, char **argv) {
	if (argc == 2 && !strcmp(argv[1], "--tsc-khz")) {
		double t0 = now();
		uint64_t c0 = rdtsc();
		usleep(200000);
		printf("%.0f\n", (rdtsc() - c0) / (now() - t0) / 1000);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: kvm-loop GUEST | --tsc-khz\n");
		return 2;
	}
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) die("KVM_CREATE_VM");
	/* The same platform Petrel creates. */
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");

	uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) die("mmap");
	struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
						.userspace_addr = (uint64_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0) die(argv[1]);
	ssize_t n = read(fd, mem + LOAD_ADDR, MEM_SIZE - LOAD_ADDR);
	if (n < 64) die("reading guest");
	close(fd);
	uint64_t entry;
	memcpy(&entry, mem + LOAD_ADDR + 24, 8); /* e_entry */

	int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (cpu < 0) die("KVM_CREATE_VCPU");
	struct { struct kvm_cpuid2 c; struct kvm_cpuid_entry2 e[256]; } cpuid = {.c.nent = 256};
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(cpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");
	int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
	if (run == MAP_FAILED) die("mmap kvm_run");

	struct kvm_sregs s;
	if (ioctl(cpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
	seg(&s.cs, 0x10, 11);
	seg(&s.ds, 0x18, 3);
	s.es = s.fs = s.gs = s.ss = s.ds;
	s.cr0 = 0x31; /* PE | ET | NE */
	s.cr4 = 0;
	s.efer = 0;
	if (ioctl(cpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = entry, .rflags = 2};
	if (ioctl(cpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

	for (;;) {
		if (ioctl(cpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) continue;
			die("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			uint8_t *d = (uint8_t *)run + run->io.data_offset;
			if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x3f8)
				fwrite(d, run->io.size, run->io.count, stdout);
			else if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x604)
				return fflush(stdout), 0;
			else if (run->io.direction == KVM_EXIT_IO_IN)
				memset(d, 0xff, run->io.size * run->io.count);
			break;
		}
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write) memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
			break;
		default:
			fprintf(stderr, "kvm-loop: exit reason %u\n", run->exit_reason);
			return 1;
		}
	}
}
