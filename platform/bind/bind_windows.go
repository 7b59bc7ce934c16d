package bind

// bindSocket: placeholder until IP_UNICAST_IF is implemented.
func bindSocket(fd uintptr, network string, ifc Interface) error { return nil }
