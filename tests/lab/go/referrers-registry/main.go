// referrers-registry: the lab's registry that serves the OCI 1.1 referrers API.
//
// The lab's ECR stand-ins (distribution 2.8) have no referrers API, which ECR serves. This is
// go-containerregistry's in-memory registry (pkg/registry) with its referrers endpoint turned
// on, served over TLS with a certificate issued by the lab CA. It checks no credentials: clients
// that send them (regctl, cosign) are served all the same. Every request is logged to stderr.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:443", "address to listen on")
	cert := flag.String("cert", "", "TLS certificate (PEM)")
	key := flag.String("key", "", "TLS key (PEM)")
	flag.Parse()
	if *cert == "" || *key == "" {
		log.Fatal("-cert and -key are required")
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	server := &http.Server{
		Addr:              *addr,
		Handler:           registry.New(registry.Logger(logger), registry.WithReferrersSupport(true)),
		ReadHeaderTimeout: 10 * time.Second,
	}
	logger.Printf("serving the referrers API on https://%s", *addr)
	log.Fatal(server.ListenAndServeTLS(*cert, *key))
}
