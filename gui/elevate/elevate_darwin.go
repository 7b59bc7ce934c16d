package elevate

func command(helper string, args []string) ([]string, error) {
	return osascriptCommand(helper, args), nil
}
