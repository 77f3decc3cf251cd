/*
 * Exit-cost benchmark guest, shared by Petrel and the minimal C KVM loop
 * (kvm-loop.c) so that both run exactly the same code.
 *
 * The file is linked flat at 0x100000 and is at once a PVH ELF (Petrel
 * boots it by its XEN_ELFNOTE_PHYS32_ENTRY note) and a raw image (the C
 * loop copies the whole file to 0x100000 and starts at e_entry). Both
 * enter entry32 in 32-bit protected mode with paging off.
 *
 * CPL0 part (emulated by kvm_pvm, so kept short): GDT, prebuilt identity
 * page tables with user access, long mode, iretq to CPL3 with IOPL=3.
 * CPL3 part (native): ITER port writes to 0x80 and ITER stores to the
 * unbacked MMIO address 0xd0000000, each timed with rdtsc; prints
 * "pio_cycles=N" and "mmio_cycles=N" per exit on COM1 and powers off
 * through ACPI PM1a_CNT (port 0x604, SLP_TYP 5 | SLP_EN).
 *
 * Build: as --64 -o g.o bench-guest.S && ld -m elf_x86_64 -Ttext=0x100000 --oformat binary -o g.bin g.o
 */
	.intel_syntax noprefix
	.set BASE, 0x100000
	.ifndef ITER
	.set ITER, 20000
	.endif
	.set WARM, 500
	.set MMIO_ADDR, 0xd0000000
	.set COM1, 0x3f8

	.text
	.code32
ehdr:	/* ELF64 header */
	.byte 0x7f, 'E', 'L', 'F', 2, 1, 1, 0
	.quad 0
	.word 2, 62			/* ET_EXEC, EM_X86_64 */
	.long 1
	.quad entry32
	.quad phdrs - ehdr
	.quad 0
	.long 0
	.word 64, 56, 2, 64, 0, 0
phdrs:	/* PT_LOAD: the whole file at BASE */
	.long 1, 7
	.quad 0, BASE, BASE
	.quad file_end - ehdr, file_end - ehdr
	.quad 0x1000
	/* PT_NOTE: the PVH entry */
	.long 4, 4
	.quad note - ehdr, note, note
	.quad note_end - note, note_end - note
	.quad 4
note:	.long 4, 8, 18			/* "Xen", XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.quad entry32
note_end:

	.balign 16
gdt:	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff	/* 0x10 kernel data */
	.quad 0x00cff2000000ffff	/* 0x18 user data (DPL 3) */
	.quad 0x00affa000000ffff	/* 0x20 user code, 64-bit (DPL 3) */
gdt_end:
gdtr:	.word gdt_end - gdt - 1
	.quad gdt

entry32:
	lgdt [gdtr]
	mov eax, cr4
	or eax, 0x20			/* PAE */
	mov cr4, eax
	mov eax, offset pml4
	mov cr3, eax
	mov ecx, 0xc0000080		/* EFER.LME */
	rdmsr
	or eax, 0x100
	wrmsr
	mov eax, cr0
	or eax, 0x80000001		/* PG | PE */
	mov cr0, eax
	ljmp 0x08, offset entry64

	.code64
entry64:
	mov ax, 0x10
	mov ds, ax
	mov es, ax
	mov ss, ax
	mov rsp, offset kernel_stack_top
	push 0x1b			/* SS: user data | RPL 3 */
	mov rax, offset user_stack_top
	push rax
	push 0x3002			/* RFLAGS: IOPL 3, IF 0 */
	push 0x23			/* CS: user code | RPL 3 */
	mov rax, offset user
	push rax
	iretq

/* Everything below runs at CPL 3. */
user:
	mov ecx, WARM
1:	out 0x80, al
	dec ecx
	jnz 1b
	rdtsc
	shl rdx, 32
	or rax, rdx
	mov r12, rax
	mov ecx, ITER
2:	out 0x80, al
	dec ecx
	jnz 2b
	rdtsc
	shl rdx, 32
	or rax, rdx
	sub rax, r12
	mov r13, rax

	mov rbx, MMIO_ADDR
	mov ecx, WARM
3:	mov dword ptr [rbx], eax
	dec ecx
	jnz 3b
	rdtsc
	shl rdx, 32
	or rax, rdx
	mov r12, rax
	mov ecx, ITER
4:	mov dword ptr [rbx], eax
	dec ecx
	jnz 4b
	rdtsc
	shl rdx, 32
	or rax, rdx
	sub rax, r12
	mov r14, rax

	lea rsi, [rip + s_pio]
	call puts
	mov rax, r13
	call putdec
	lea rsi, [rip + s_mmio]
	call puts
	mov rax, r14
	call putdec
	lea rsi, [rip + s_iter]
	call puts
	mov rax, ITER
	call putdec

	mov dx, 0x604			/* ACPI S5 */
	mov ax, 0x3400
	out dx, ax
5:	jmp 5b

/* puts: print the NUL-terminated string at rsi. */
puts:
	mov dx, COM1
6:	mov al, [rsi]
	test al, al
	jz 7f
	out dx, al
	inc rsi
	jmp 6b
7:	ret

/* putdec: print rax in decimal and a newline. */
putdec:
	lea rdi, [rip + numbuf_end]
	mov byte ptr [rdi], 0
	dec rdi
	mov byte ptr [rdi], 10
	mov rcx, 10
8:	xor edx, edx
	div rcx
	add dl, '0'
	dec rdi
	mov [rdi], dl
	test rax, rax
	jnz 8b
	mov rsi, rdi
	jmp puts

s_pio:	.asciz "pio_cycles_total="
s_mmio:	.asciz "mmio_cycles_total="
s_iter:	.asciz "iterations="
numbuf:	.fill 32, 1, 0
numbuf_end: .byte 0

	.balign 4096
user_stack:
	.fill 4096, 1, 0
user_stack_top:
	.fill 512, 1, 0
kernel_stack_top:
	.balign 4096

/* Identity map of the first 4 GiB with 2 MiB user pages. */
pml4:	.quad pdpt + 7
	.fill 511, 8, 0
pdpt:	.quad pd + 7, pd + 0x1007, pd + 0x2007, pd + 0x3007
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 2048
	.quad (i << 21) | 0x87		/* P | RW | US | PS */
	.set i, i + 1
	.endr
file_end:
