/*
 * PVH entry for Petrel's guest test programs.
 *
 * The loader enters _start32 in 32-bit protected mode with paging off and
 * %ebx pointing at hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h).
 * This stub switches to long mode with static identity page tables (2 MiB
 * pages, the first 4 GiB and the first 1 GiB of the 64-bit PCI window at
 * 4 GiB (where machine/pc puts it for guests with no RAM above 4 GiB),
 * every page user-accessible, 3-4 GiB and the high window uncached),
 * loads a GDT with user segments and a TSS, fills the IDT, masks the 8259s
 * and drops to CPL3 with IOPL=3 and IF=1 in _cstart (guest.c).
 *
 * Everything here runs at CPL0, which kvm_pvm emulates one instruction at a
 * time, and whose emulator lacks int3, cmpxchg16b and the xsave family:
 * keep it short and plain.
 */

#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x1b /* 0x18 | RPL 3 */
#define SEL_UCODE 0x23 /* 0x20 | RPL 3 */
#define SEL_TSS   0x28

#define PTE_P   0x01
#define PTE_RW  0x02
#define PTE_US  0x04
#define PTE_PWT 0x08
#define PTE_PCD 0x10
#define PTE_PS  0x80
#define PTE_TABLE (PTE_P | PTE_RW | PTE_US)
#define PTE_2M    (PTE_P | PTE_RW | PTE_US | PTE_PS)
#define PTE_2M_UC (PTE_2M | PTE_PCD | PTE_PWT)

#define KSTACK_SIZE 0x4000
#define USTACK_SIZE 0x10000

	.section .note.xen, "a"
	.balign 4
	.long 4			/* namesz: "Xen\0" */
	.long 4			/* descsz */
	.long 18		/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long _start32

	.section .text.entry, "ax"
	.code32
	.globl _start32
_start32:
	cli
	movl %ebx, pvh_start_info
	lgdt gdt_ptr
	movl %cr4, %eax
	orl $0x20, %eax			/* CR4.PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* IA32_EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	ljmp $SEL_KCODE, $long_entry

	.code64
long_entry:
	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	movq $kstack_top, %rsp

	/* TSS descriptor base (bits 0-23 at +2, 24-31 at +7, 32-63 at +8). */
	movq $tss, %rax
	movw %ax, gdt_tss + 2
	shrq $16, %rax
	movb %al, gdt_tss + 4
	movb %ah, gdt_tss + 7
	shrq $16, %rax
	movl %eax, gdt_tss + 8
	movw $SEL_TSS, %ax
	ltr %ax

	/* IDT: 256 interrupt gates, DPL 0, handler addresses from isr_table. */
	movq $idt, %rdi
	movq $isr_table, %rsi
	movl $256, %ecx
1:	movq (%rsi), %rax
	movw %ax, (%rdi)		/* offset 15:0 */
	movw $SEL_KCODE, 2(%rdi)
	movw $0x8e00, 4(%rdi)		/* present, interrupt gate, IST 0 */
	shrq $16, %rax
	movw %ax, 6(%rdi)		/* offset 31:16 */
	shrq $16, %rax
	movl %eax, 8(%rdi)		/* offset 63:32 */
	movl $0, 12(%rdi)
	addq $16, %rdi
	addq $8, %rsi
	decl %ecx
	jnz 1b
	lidt idt_ptr

	/* Mask both 8259s: only the IOAPIC and MSIs interrupt this guest. */
	movb $0xff, %al
	outb %al, $0x21
	outb %al, $0xa1

	/* To CPL3 with IOPL=3 and IF=1 (kvm_pvm clears IOPL in user mode:
	 * there the TSS I/O bitmap is what allows port I/O). */
	pushq $SEL_UDATA
	pushq $ustack_top
	pushq $0x3202
	pushq $SEL_UCODE
	pushq $_cstart
	iretq

/* Interrupt stubs: push a zero error code where the CPU pushes none, then
 * the vector, so every frame is: vector, error, rip, cs, rflags, rsp, ss. */
	.altmacro
	.macro isr_stub vec
isr_\vec:
	.if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	pushq $0
	.endif
	pushq $\vec
	jmp isr_common
	.endm

	.macro isr_addr vec
	.quad isr_\vec
	.endm

	.set vec, 0
	.rept 256
	isr_stub %vec
	.set vec, vec + 1
	.endr

/* Vectors 32-255 (MSI/MSI-X, IOAPIC pins, spurious) count and return;
 * CPU exceptions report and power off through guest_exception (guest.c). */
isr_common:
	cmpq $32, (%rsp)
	jb exception
	pushq %rax
	pushq %rdx
	movq 16(%rsp), %rax
	incl irq_count(,%rax,4)
	movl $0xfee000b0, %edx		/* LAPIC EOI */
	movl $0, (%rdx)
	popq %rdx
	popq %rax
	addq $16, %rsp
	iretq
exception:
	movq %rsp, %rdi
	subq $8, %rsp
	call guest_exception
2:	jmp 2b

	.section .rodata
	.balign 8
isr_table:
	.set vec, 0
	.rept 256
	isr_addr %vec
	.set vec, vec + 1
	.endr

	.data
	.balign 16
gdt:
	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff	/* 0x10 kernel data */
	.quad 0x00cff2000000ffff	/* 0x18 user data, DPL 3 */
	.quad 0x00affa000000ffff	/* 0x20 user code, 64-bit, DPL 3 */
gdt_tss:
	.quad 0x0000890000002068	/* 0x28 TSS, available, limit 104+8192; base set above */
	.quad 0
gdt_end:
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

	.balign 16
tss:
	.long 0
	.quad kstack_top		/* rsp0: the stack for interrupts from CPL3 */
	.fill 88, 1, 0
	.word 0
	.word 104			/* I/O permission bitmap right after */
	/* All 65536 ports allowed. kvm_pvm runs CPL3 with IOPL forced to 0
	 * and emulates a trapped in/out when this bitmap permits it. */
	.fill 8192, 1, 0
	.byte 0xff

	.balign 8
idt_ptr:
	.word 256 * 16 - 1
	.quad idt

	.globl pvh_start_info
pvh_start_info:
	.quad 0

/* Identity page tables. */
	.balign 4096
pml4:
	.quad pdpt_low + PTE_TABLE
	.fill 511, 8, 0
pdpt_low:
	.quad pd_low + PTE_TABLE
	.quad pd_low + 0x1000 + PTE_TABLE
	.quad pd_low + 0x2000 + PTE_TABLE
	.quad pd_low + 0x3000 + PTE_TABLE
	.quad pd_high + PTE_TABLE	/* 4 GiB: the 64-bit PCI window */
	.fill 507, 8, 0
pd_low:
	.set i, 0
	.rept 1536			/* 0-3 GiB: RAM, write-back */
	.quad (i << 21) + PTE_2M
	.set i, i + 1
	.endr
	.rept 512			/* 3-4 GiB: PCI window, IOAPIC, LAPIC: uncached */
	.quad (i << 21) + PTE_2M_UC
	.set i, i + 1
	.endr
pd_high:
	.set i, 0
	.rept 512
	.quad (4 << 30) + (i << 21) + PTE_2M_UC
	.set i, i + 1
	.endr

	.section .stacks, "aw", @nobits
	.balign 4096
idt:
	.skip 256 * 16
	.balign 16
kstack:
	.skip KSTACK_SIZE
kstack_top:
	.globl ustack_top
ustack:
	.skip USTACK_SIZE
ustack_top:
	.section .note.GNU-stack, "", @progbits
