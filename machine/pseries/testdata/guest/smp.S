# A 2-CPU pseries guest for scripts/e2e-pseries.sh, run by Petrel on
# (nested) KVM. Entered on CPU 0 in 64-bit big-endian real mode at 0. It
# checks, printing one line per step on the vty (H_PUT_TERM_CHAR):
#   RTAS get-time-of-day      -> "time ok"
#   H_LOGICAL_MEMOP copy, xor -> "memop ok", "xor ok"
#   RTAS nvram-store/fetch    -> "nvram ok"
#   RTAS start-cpu of CPU 1, which prints "cpu1 up" and calls stop-self;
#   query-cpu-stopped-state   -> "cpu1 stopped"
#   H_IPI to itself, taken as an external interrupt at 0x500 through
#   KVM_INTERRUPT, accepted with H_XIRR and ended with H_EOI -> "ipi ok"
#   H_REGISTER_PROC_TBL of a radix process table (KVM_PPC_CONFIGURE_V3_MMU)
#                             -> "proctbl ok"
#   RTAS power-off.
# The RTAS tokens are Petrel's (machine/pseries TestE2EGuestAgrees checks
# them). Built like hello.S (-Ttext=0, loaded and linked at 0).

	.set	H_PUT_TERM_CHAR, 0x58
	.set	H_EOI, 0x64
	.set	H_CPPR, 0x68
	.set	H_IPI, 0x6c
	.set	H_XIRR, 0x74
	.set	H_LOGICAL_MEMOP, 0xf001
	.set	H_REGISTER_PROC_TBL, 0x37c
	.set	RTAS_GET_TIME_OF_DAY, 0x2001
	.set	RTAS_POWER_OFF, 0x2003
	.set	RTAS_QUERY_CPU_STOPPED_STATE, 0x2005
	.set	RTAS_START_CPU, 0x2006
	.set	RTAS_STOP_SELF, 0x2007
	.set	RTAS_NVRAM_FETCH, 0x200a
	.set	RTAS_NVRAM_STORE, 0x200b

	.macro	LA reg, sym		# load a (low, absolute) address
	lis	\reg, \sym@h
	ori	\reg, \reg, \sym@l
	.endm
	.macro	PUTS sym		# print a 16-byte message
	LA	30, \sym
	bl	puts16
	.endm
	.macro	RTAS blk		# H_RTAS on a parameter block
	lis	3, 0
	ori	3, 3, 0xf000
	LA	4, \blk
	sc	1
	.endm

	.text
	.globl	_start
_start:
	b	main

	.org	0x500			# external interrupt (real mode)
	mfsrr0	24			# sc 1 below overwrites SRR0/SRR1
	mfsrr1	25
	li	3, H_XIRR
	sc	1
	mr	22, 4			# XIRR
	li	3, H_IPI		# clear our MFRR (as Linux's IPI handler)
	li	4, 0
	li	5, 0xff
	sc	1
	li	3, H_EOI
	mr	4, 22
	sc	1
	li	21, 1			# tell main
	mtsrr0	24
	mtsrr1	25
	rfid

	.org	0x900			# decrementer: push it far away again
	lis	23, 0x7fff
	ori	23, 23, 0xffff
	mtdec	23
	rfid

	.org	0x1000
# puts16: print the 16 bytes at r30. Clobbers r3-r7.
puts16:
	li	3, H_PUT_TERM_CHAR
	lis	4, 0x7100
	li	5, 16
	ld	6, 0(30)
	ld	7, 8(30)
	sc	1
	blr

main:
	LA	1, stack_top		# a stack, as any interrupted code has
	lis	5, 0x7fff		# no decrementer interrupt for a while
	ori	5, 5, 0xffff
	mtdec	5
	PUTS	m_hello

	RTAS	b_tod			# status 0 and a year after 2023
	LA	5, b_tod
	lwz	6, 12(5)
	lwz	7, 16(5)
	cmpwi	6, 0
	bne	fail
	cmpwi	7, 2024
	blt	fail
	PUTS	m_time

	li	3, 0			# copy m_memop to buf, 2 x 8-byte elements
	ori	3, 3, H_LOGICAL_MEMOP
	LA	4, buf
	LA	5, m_memop
	li	6, 3
	li	7, 2
	li	8, 0
	sc	1
	cmpdi	3, 0
	bne	fail
	PUTS	buf
	li	3, 0			# buf ^= buf, 16 bytes: must read as zero
	ori	3, 3, H_LOGICAL_MEMOP
	LA	4, buf
	mr	5, 4
	li	6, 0
	li	7, 16
	li	8, 1
	sc	1
	LA	5, buf
	ld	6, 0(5)
	ld	7, 8(5)
	or.	6, 6, 7
	bne	fail
	PUTS	m_xor

	RTAS	b_nvstore		# m_nvram -> NVRAM 0x100 -> buf2
	RTAS	b_nvfetch
	LA	5, b_nvfetch
	lwz	6, 24(5)		# status
	cmpwi	6, 0
	bne	fail
	PUTS	buf2

	RTAS	b_start			# CPU 1 at secondary
	LA	5, b_start
	lwz	6, 24(5)
	cmpwi	6, 0
	bne	fail
1:	LA	5, flag			# wait for "cpu1 up" ...
	lwz	6, 0(5)
	cmpwi	6, 1
	bne	1b
2:	RTAS	b_query			# ... and for it to stop
	LA	5, b_query
	lwz	6, 16(5)		# status
	lwz	7, 20(5)		# 0 stopped, 2 running
	cmpwi	6, 0
	bne	fail
	cmpwi	7, 0
	bne	2b
	PUTS	m_stopped

	li	21, 0
	li	3, H_CPPR		# accept everything
	li	4, 0xff
	sc	1
	mfmsr	5			# external interrupts on
	ori	5, 5, 0x8000
	mtmsrd	5, 1
	li	3, H_IPI		# IPI to ourselves at priority 5
	li	4, 0
	li	5, 5
	sc	1
3:	cmpdi	21, 1			# the 0x500 handler sets r21
	bne	3b
	lis	5, 0xff00		# XIRR = CPPR 0xff | XISR 2 (IPI)
	ori	5, 5, 2
	clrldi	5, 5, 32
	clrldi	22, 22, 32
	cmpd	22, 5
	bne	fail
	PUTS	m_ipi

	li	3, H_REGISTER_PROC_TBL	# MODIFY|REGISTER|RADIX|GTSE, a 4 KiB
	li	4, 0x1d			# table at 0x30000 (size field 0)
	lis	5, 3
	li	6, 0
	li	7, 0
	sc	1
	cmpdi	3, 0
	bne	fail
	PUTS	m_proctbl
	b	off

fail:	PUTS	m_fail
off:	RTAS	b_off
4:	b	4b

# CPU 1 starts here (start-cpu), r3 = 1.
secondary:
	LA	1, stack_top - 128
	PUTS	m_cpu1
	LA	5, flag
	li	6, 1
	stw	6, 0(5)
	RTAS	b_stop
5:	b	5b			# stop-self does not return

	.data
	.balign	8
m_hello:	.ascii	"cpu0 up       \r\n"
m_time:		.ascii	"time ok       \r\n"
m_memop:	.ascii	"memop ok      \r\n"
m_xor:		.ascii	"xor ok        \r\n"
m_nvram:	.ascii	"nvram ok      \r\n"
m_cpu1:		.ascii	"cpu1 up       \r\n"
m_stopped:	.ascii	"cpu1 stopped  \r\n"
m_ipi:		.ascii	"ipi ok        \r\n"
m_proctbl:	.ascii	"proctbl ok    \r\n"
m_fail:		.ascii	"FAIL          \r\n"
buf:		.space	16
buf2:		.space	16
flag:		.long	0
	.balign	16
		.space	512
stack_top:
	.balign	4
b_tod:		.long	RTAS_GET_TIME_OF_DAY, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0
b_nvstore:	.long	RTAS_NVRAM_STORE, 3, 2, 0x100, m_nvram, 16, 0, 0
b_nvfetch:	.long	RTAS_NVRAM_FETCH, 3, 2, 0x100, buf2, 16, 0, 0
b_start:	.long	RTAS_START_CPU, 3, 1, 1, secondary, 1, 0
b_query:	.long	RTAS_QUERY_CPU_STOPPED_STATE, 1, 2, 1, 0, 0
b_stop:		.long	RTAS_STOP_SELF, 0, 1, 0
b_off:		.long	RTAS_POWER_OFF, 2, 1, 0xffffffff, 0xffffffff, 0
