package vmm

// asm-generic/ioctl.h: 2 direction bits at 30.
const (
	iocNone     = 0
	iocWrite    = 1
	iocRead     = 2
	iocDirShift = 30
)
