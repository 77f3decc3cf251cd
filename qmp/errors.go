package qmp

import "fmt"

// QMP error classes, as QEMU names them.
const (
	ClassGeneric         = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotFound  = "DeviceNotFound"
)

// Error is a QMP error reply. Machine methods return it to choose the class;
// any other error is reported as GenericError with its text.
type Error struct {
	Class string
	Desc  string
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Errorf returns a GenericError.
func Errorf(format string, args ...any) error {
	return &Error{Class: ClassGeneric, Desc: fmt.Sprintf(format, args...)}
}

// DeviceNotFound returns a DeviceNotFound error for id, worded as QEMU does.
func DeviceNotFound(id string) error {
	return &Error{Class: ClassDeviceNotFound, Desc: fmt.Sprintf("Device '%s' not found", id)}
}
