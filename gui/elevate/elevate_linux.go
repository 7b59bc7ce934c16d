package elevate

func command(helper string, args []string) ([]string, error) { return pkexecCommand(helper, args) }
