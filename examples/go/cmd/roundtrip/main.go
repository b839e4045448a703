// Command roundtrip is the smallest complete Go client of govbus: it checks
// the health of the broker and of the civil registry's adapter, lists their
// services by reflection, publishes a birth certificate as the civil
// registry, reads it back as evidence as the portal, and shows that the
// civil registry may not publish a record type it does not own.
//
// Configuration comes from the environment:
//
//	GOVBUS_CERTS           folder with ca.pem and <stem>.pem / <stem>.key per identity
//	GOVBUS_BROKER          host:port of the broker (govbus.v1.OnceOnly)
//	GOVBUS_CIVIL_REGISTRY  host:port of the civil registry's adapter (govbus.v1.AgencyAdapter)
//	GOVBUS_SUBJECT         the PINFL (14 digits) of the child
//
// Results go to stdout, one line per step; diagnostics go to stderr. The exit
// status is 0 only when every step passed.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	recordsv1 "govbus.example/examples/go/gen/govbus/records/v1"
	govbusv1 "govbus.example/examples/go/gen/govbus/v1"
)

// The identities this example acts as: the file stems of their certificate
// and key in GOVBUS_CERTS.
const (
	civilRegistry = "civil-registry.fhdy" // owns birth_certificate
	portal        = "egov.portal"         // reads evidence
)

// callTimeout bounds every single call; evidenceWait bounds the wait for a
// published record to reach the broker's showcase.
const (
	callTimeout  = 10 * time.Second
	evidenceWait = 30 * time.Second
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "roundtrip:", err)
		os.Exit(1)
	}
}

func run() error {
	certs, err := env("GOVBUS_CERTS")
	if err != nil {
		return err
	}
	brokerAddr, err := env("GOVBUS_BROKER")
	if err != nil {
		return err
	}
	adapterAddr, err := env("GOVBUS_CIVIL_REGISTRY")
	if err != nil {
		return err
	}
	subject, err := env("GOVBUS_SUBJECT")
	if err != nil {
		return err
	}
	if len(subject) != 14 || strings.Trim(subject, "0123456789") != "" {
		return fmt.Errorf("GOVBUS_SUBJECT=%q: expected a PINFL (14 digits)", subject)
	}

	// One connection per (server, identity): the identity is the client
	// certificate presented in the TLS handshake, never a request field.
	broker, err := dial(brokerAddr, certs, portal)
	if err != nil {
		return err
	}
	defer broker.Close()
	adapter, err := dial(adapterAddr, certs, civilRegistry)
	if err != nil {
		return err
	}
	defer adapter.Close()

	ctx := context.Background()
	for _, s := range []struct {
		addr string
		conn *grpc.ClientConn
	}{{brokerAddr, broker}, {adapterAddr, adapter}} {
		st, err := checkHealth(ctx, s.conn)
		if err != nil {
			return fmt.Errorf("health %s: %w", s.addr, err)
		}
		fmt.Printf("health %s: %s\n", s.addr, st)
		if st != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %s: %s, want SERVING", s.addr, st)
		}
	}
	for _, s := range []struct {
		addr string
		conn *grpc.ClientConn
	}{{brokerAddr, broker}, {adapterAddr, adapter}} {
		names, err := listServices(ctx, s.conn)
		if err != nil {
			return fmt.Errorf("services %s: %w", s.addr, err)
		}
		fmt.Printf("services %s: %s\n", s.addr, strings.Join(names, ","))
	}

	published, err := publishBirthCertificate(ctx, govbusv1.NewAgencyAdapterClient(adapter), subject)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Printf("published: %s %s %d %d\n", published.GetRecordId(), published.GetTopic(), published.GetPartition(), published.GetOffset())

	evidence, err := readEvidence(ctx, govbusv1.NewOnceOnlyClient(broker), subject, published.GetRecordId())
	if err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	r := evidence.GetRecord()
	fmt.Printf("evidence: %s %s v%d %s\n", r.GetRecordId(), r.GetRecordType(), r.GetVersion(), evidence.GetStatus())

	st, err := publishForeignRecord(ctx, govbusv1.NewAgencyAdapterClient(adapter), subject)
	if err != nil {
		return fmt.Errorf("refusal: %w", err)
	}
	fmt.Printf("refused: %s %s\n", codeName(st.Code()), st.Message())
	return nil
}

func env(name string) (string, error) {
	v := os.Getenv(name)
	if v == "" {
		return "", fmt.Errorf("%s is not set", name)
	}
	return v, nil
}

// dial opens a mutually authenticated TLS connection to addr as the identity
// whose certificate and key are <certs>/<stem>.pem and <certs>/<stem>.key.
// The server's certificate must chain to <certs>/ca.pem and name the host of
// addr (govbus server certificates name localhost and 127.0.0.1).
func dial(addr, certs, stem string) (*grpc.ClientConn, error) {
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s/ca.pem: no PEM certificate", certs)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(certs, stem+".pem"), filepath.Join(certs, stem+".key"))
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", stem, err)
	}
	creds := credentials.NewTLS(&tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	})
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}

// checkHealth asks the standard health service about the whole server
// (service "").
func checkHealth(ctx context.Context, conn *grpc.ClientConn) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		return 0, err
	}
	return resp.GetStatus(), nil
}

// listServices returns the sorted names of the services the server offers,
// through server reflection (govbus serves grpc.reflection.v1 and v1alpha).
func listServices(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	req := &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: ""},
	}
	if err := stream.Send(req); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	_ = stream.CloseSend()
	if e := resp.GetErrorResponse(); e != nil {
		return nil, status.Error(codes.Code(e.GetErrorCode()), e.GetErrorMessage())
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	return names, nil
}

// publishBirthCertificate publishes one birth certificate about subject
// through the civil registry's adapter. It returns once Kafka has
// acknowledged the record, and fails unless the record was accepted.
func publishBirthCertificate(ctx context.Context, adapter govbusv1.AgencyAdapterClient, subject string) (*govbusv1.PublishResult, error) {
	number := "I-GO " + randomDigits(7)
	payload, err := anypb.New(&recordsv1.BirthCertificate{
		CertificateNumber: number,
		DateOfBirth:       birthDate(subject),
		Child: &recordsv1.PersonName{
			Pinfl:     subject,
			FirstName: "Laylo",
			LastName:  "Yusupova",
		},
	})
	if err != nil {
		return nil, err
	}
	record := &govbusv1.Record{
		// record_id is left empty: the adapter assigns a UUID v7.
		RecordType: "birth_certificate",
		SubjectId:  subject,
		RecordKey:  number, // unique per certificate; versions count per key
		Version:    1,
		Status:     govbusv1.RecordStatus_RECORD_STATUS_ACTIVE,
		IssuedAt:   timestamppb.Now(),
		Payload:    payload,
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := adapter.Publish(ctx, &govbusv1.PublishRequest{Records: []*govbusv1.Record{record}})
	if err != nil {
		return nil, err
	}
	if len(resp.GetResults()) != 1 {
		return nil, fmt.Errorf("%d results for 1 record", len(resp.GetResults()))
	}
	result := resp.GetResults()[0]
	if result.GetOutcome() != govbusv1.PublishOutcome_PUBLISH_OUTCOME_ACCEPTED {
		return nil, fmt.Errorf("record %s: %s %s", result.GetRecordId(), result.GetOutcome(), result.GetError())
	}
	return result, nil
}

// readEvidence asks the broker, as the portal, for the birth certificates of
// subject, until the one with recordID is there (records reach the showcase
// through Kafka a moment after Publish returns) or evidenceWait has passed.
func readEvidence(ctx context.Context, broker govbusv1.OnceOnlyClient, subject, recordID string) (*govbusv1.Evidence, error) {
	deadline := time.Now().Add(evidenceWait)
	req := &govbusv1.GetEvidenceRequest{
		SubjectId:  subject,
		RecordType: "birth_certificate",
		Purpose:    "demo",
	}
	for {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := broker.GetEvidence(callCtx, req)
		cancel()
		switch {
		case err == nil:
			for _, e := range resp.GetEvidence() {
				if e.GetRecord().GetRecordId() == recordID {
					return e, nil
				}
			}
			err = fmt.Errorf("%d records, none is %s", len(resp.GetEvidence()), recordID)
		case status.Code(err) == codes.NotFound:
			// Not in the showcase yet.
		default:
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not there after %s: %w", evidenceWait, err)
		}
		fmt.Fprintf(os.Stderr, "roundtrip: evidence not there yet (%v); retrying\n", err)
		time.Sleep(500 * time.Millisecond)
	}
}

// publishForeignRecord tries to publish an address registration, a record
// type owned by the interior ministry, as the civil registry. The adapter
// must refuse it with PERMISSION_DENIED; that refusal is returned.
func publishForeignRecord(ctx context.Context, adapter govbusv1.AgencyAdapterClient, subject string) (*status.Status, error) {
	payload, err := anypb.New(&recordsv1.AddressRegistration{
		Resident: &recordsv1.PersonName{Pinfl: subject, FirstName: "Laylo", LastName: "Yusupova"},
		Address:  &recordsv1.Address{Region: "Toshkent shahri", District: "Yunusobod", Street: "Amir Temur", House: "1"},
		Kind:     recordsv1.RegistrationKind_REGISTRATION_KIND_PERMANENT,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err = adapter.Publish(ctx, &govbusv1.PublishRequest{Records: []*govbusv1.Record{{
		RecordType: "address_registration",
		SubjectId:  subject,
		RecordKey:  "GO-" + randomDigits(9),
		Version:    1,
		Status:     govbusv1.RecordStatus_RECORD_STATUS_ACTIVE,
		IssuedAt:   timestamppb.Now(),
		Payload:    payload,
	}}})
	if err == nil {
		return nil, errors.New("address_registration was accepted from the civil registry")
	}
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied {
		return nil, fmt.Errorf("want PERMISSION_DENIED, got %s: %s", codeName(st.Code()), st.Message())
	}
	return st, nil
}

// codeName spells a status code as the gRPC specification does
// (PERMISSION_DENIED), not as Go's String method (PermissionDenied).
func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
		codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
		codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return c.String()
}

// birthDate reads the date of birth out of a PINFL: digit 1 gives the
// century (1-2: 1800s, 3-4: 1900s, 5-6: 2000s), digits 2-7 are DDMMYY.
func birthDate(pinfl string) string {
	century := map[byte]string{'1': "18", '2': "18", '3': "19", '4': "19", '5': "20", '6': "20"}[pinfl[0]]
	return century + pinfl[5:7] + "-" + pinfl[3:5] + "-" + pinfl[1:3]
}

func randomDigits(n int) string {
	var b strings.Builder
	for range n {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			panic(err)
		}
		b.WriteByte(byte('0' + d.Int64()))
	}
	return b.String()
}
