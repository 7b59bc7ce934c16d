package fallback

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// newProxy returns a reverse proxy to target that behaves like nginx's
// proxy_pass: Host rewritten to the target, the upstream's Server and Date
// replaced by ours, and 502/504 pages on upstream failure.
func newProxy(target *url.URL, log *slog.Logger) *httputil.ReverseProxy {
	transport := &http.Transport{
		Proxy: nil, // never via an environment proxy
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       60 * time.Second,
		MaxIdleConnsPerHost:   8,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target) // also sets Host to the target's
		},
		Transport: transport,
		ModifyResponse: func(res *http.Response) error {
			res.Header.Del("Server")
			res.Header.Del("Date")
			return nil
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Debug("fallback upstream error", "upstream", target.Host, "err", err)
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			code := http.StatusBadGateway
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				code = http.StatusGatewayTimeout
			}
			writeStatusPage(w, code)
		},
	}
}
