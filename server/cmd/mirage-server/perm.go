package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/mirage-vpn/mirage/core/config"
)

// checkFiles refuses to serve with a config, users file or TLS key that
// other local users may change (a writable users file lets anyone add a
// user; server.toml holds the REALITY private key and decides where
// traffic goes), and warns when others may read the ones holding secrets.
// insecure turns the refusal into a loud warning.
func checkFiles(cfg *config.Server, log *slog.Logger, insecure bool) error {
	type file struct {
		path, what string
		secret     bool
	}
	files := []file{
		{cfg.Path, "server config", cfg.RealityEnabled()},
		{cfg.ResolvePath(cfg.Authentication.UsersFile), "users file", true},
		{cfg.ResolvePath(cfg.TLS.KeyFile), "TLS private key", true},
		{cfg.ResolvePath(cfg.TLS.CertFile), "TLS certificate", false},
	}
	var errs []error
	for _, f := range files {
		if f.path == "" {
			continue
		}
		readable, err := config.CheckPermissions(f.path, f.what)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // generated later (auto_generate) or reported by its loader
		case errors.Is(err, config.ErrUnsafePermissions) && insecure:
			log.Warn("INSECURE: serving with a file other users may change (--insecure-permissions)", "file", f.path, "err", err)
		case err != nil:
			errs = append(errs, err)
			continue
		}
		if readable && f.secret {
			log.Warn("file with secrets is readable by other users; chmod o-r it", "what", f.what, "file", f.path)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	return nil
}
