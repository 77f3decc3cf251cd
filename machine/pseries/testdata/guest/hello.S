# A tiny pseries guest for scripts/e2e-pseries.sh: entered by Petrel in
# 64-bit big-endian real mode at 0 (r3 = device tree), it prints a line on
# the vty with H_PUT_TERM_CHAR and powers off with RTAS power-off made
# through H_RTAS, the hypercall Petrel's RTAS stub makes.
# Build: powerpc64le-linux-gnu-as -a64 -mbig -mpower8 hello.S -o hello.o
#        powerpc64le-linux-gnu-ld -EB -m elf64ppc -Ttext=0 -e _start hello.o -o hello.elf
#        powerpc64le-linux-gnu-objcopy -O binary hello.elf hello.bin
	.text
	.globl	_start
_start:
	bl	1f
1:	mflr	31			# r31 = runtime address of 1b
	addi	30, 31, msg - 1b
	li	29, 2			# two 16-byte chunks
2:	li	3, 0x58			# H_PUT_TERM_CHAR
	lis	4, 0x7100		# termno 0x71000000 (the vty's reg)
	li	5, 16
	ld	6, 0(30)		# bytes 0-7, big-endian packed
	ld	7, 8(30)		# bytes 8-15
	sc	1
	addi	30, 30, 16
	addi	29, 29, -1
	cmpdi	29, 0
	bne	2b
	lis	3, 0			# H_RTAS (0xf000)
	ori	3, 3, 0xf000
	addi	4, 31, rtas - 1b	# r4 = parameter block
	sc	1
3:	b	3b			# power-off does not return

	.balign	8
msg:	.ascii	"petrel pseries: hello, POWER!!\r\n"
	.balign	4
rtas:	.long	0x2003			# token of power-off (see the test)
	.long	2, 1			# nargs, nret
	.long	0xffffffff, 0xffffffff	# power-on mask
	.long	0			# status
