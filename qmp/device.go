package qmp

import "github.com/petrel-vmm/petrel/qemuopt"

// runDeviceAdd reads device_add's arguments with the parser -device uses
// (qemuopt), so QMP and the command line accept the same properties with
// the same value syntax, and hands the spec to the machine.
func runDeviceAdd(s *Server, a map[string]any) (any, func(), error) {
	spec, err := qemuopt.DeviceFromQMP(a)
	if err != nil {
		return nil, nil, Errorf("%v", err)
	}
	return nil, nil, s.m.DeviceAdd(spec)
}

// runNetdevAdd reads netdev_add's arguments with -netdev's parser.
func runNetdevAdd(s *Server, a map[string]any) (any, func(), error) {
	spec, err := qemuopt.NetdevFromQMP(a)
	if err != nil {
		return nil, nil, Errorf("%v", err)
	}
	return nil, nil, s.m.NetdevAdd(spec)
}

// runBlockdevAdd reads blockdev-add's arguments as -blockdev's JSON form.
func runBlockdevAdd(s *Server, a map[string]any) (any, func(), error) {
	spec, err := qemuopt.BlockdevFromQMP(a)
	if err != nil {
		return nil, nil, Errorf("%v", err)
	}
	return nil, nil, s.m.BlockdevAdd(spec)
}
