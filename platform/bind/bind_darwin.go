package bind

// bindSocket: placeholder until IP_BOUND_IF is implemented.
func bindSocket(fd uintptr, network string, ifc Interface) error { return nil }
