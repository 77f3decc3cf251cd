/*
 * MSI test guest (TestMSIAndIrqfdReachGuest). A flat PVH ELF entered in
 * 32-bit protected mode at CPL0. It enables the local APIC, sets the flag
 * byte at 0x9000 to 1 and halts with interrupts on. Vector 0x40 (the test
 * sends it with KVM_SIGNAL_MSI) prints 'M', EOIs, sets the flag to 2 and
 * halts again; vector 0x41 (sent through an irqfd and an MSI GSI route)
 * prints 'F' and powers off. Handlers never iret (kvm_pvm cannot emulate a
 * 32-bit iret at CPL0): each halts with interrupts on inside the last.
 *
 * Build: as --32 -I testdata -o g.o msi-guest.S && ld -m elf_i386 -Ttext=0x100000 -e 0x100000 --oformat binary -o g.bin g.o
 */
	.include "pvh32-header.inc"

entry:
	mov esp, offset stack_top
	lidt [idtr]
	mov dword ptr [0xfee000f0], 0x1ff	/* LAPIC software enable */
	mov byte ptr [0x9000], 1
	sti
1:	hlt
	jmp 1b

msi:
	mov dx, 0x3f8
	mov al, 'M'
	out dx, al
	mov dword ptr [0xfee000b0], 0		/* EOI */
	mov byte ptr [0x9000], 2
	sti
2:	hlt
	jmp 2b

irqfd:
	mov dx, 0x3f8
	mov al, 'F'
	out dx, al
	mov dx, 0x604
	mov ax, 0x3400
	out dx, ax
3:	hlt
	jmp 3b

	.include "stubs.inc"

	.balign 8
idt:
	.set v, 0
	.rept 256
	.if v == 0x40
	gate msi
	.elseif v == 0x41
	gate irqfd
	.else
	gate "stubs + v * STUB"
	.endif
	.set v, v + 1
	.endr
	guest_tail
