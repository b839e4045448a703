package govbus.example;

import com.google.protobuf.Any;
import com.google.protobuf.Message;
import com.google.protobuf.Timestamp;
import govbus.records.v1.CivilRegistry.BirthCertificate;
import govbus.records.v1.Common.Address;
import govbus.records.v1.Common.PersonName;
import govbus.records.v1.Interior.AddressRegistration;
import govbus.records.v1.Interior.RegistrationKind;
import govbus.v1.Adapter.PublishOutcome;
import govbus.v1.Adapter.PublishRequest;
import govbus.v1.Adapter.PublishResult;
import govbus.v1.AgencyAdapterGrpc;
import govbus.v1.OnceOnlyGrpc;
import govbus.v1.OnceOnlyOuterClass.Evidence;
import govbus.v1.OnceOnlyOuterClass.GetEvidenceRequest;
import govbus.v1.RecordOuterClass.Record;
import govbus.v1.RecordOuterClass.RecordStatus;
import io.grpc.Channel;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.netty.shaded.io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.handler.ssl.SslContext;
import io.grpc.reflection.v1.ServerReflectionGrpc;
import io.grpc.reflection.v1.ServerReflectionRequest;
import io.grpc.reflection.v1.ServerReflectionResponse;
import io.grpc.reflection.v1.ServiceResponse;
import io.grpc.stub.StreamObserver;
import java.io.File;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * A Java agency system on govbus: publishes a birth certificate through the
 * civil registry's adapter and reads it back from the broker as the portal,
 * over mutual TLS. The caller's identity is its client certificate; nothing
 * else is needed to authenticate.
 *
 * <p>Environment: GOVBUS_CERTS (folder with ca.pem and &lt;stem&gt;.pem/.key),
 * GOVBUS_BROKER and GOVBUS_CIVIL_REGISTRY (host:port), GOVBUS_SUBJECT (a PINFL).
 * Results go to stdout, one line per step; diagnostics go to stderr.
 */
public final class Roundtrip {
  /** File stems of the client certificates in GOVBUS_CERTS. */
  static final String CIVIL_REGISTRY = "civil-registry.fhdy";
  static final String PORTAL = "egov.portal";

  static final long CALL_SECONDS = 10;
  static final long PUBLISH_SECONDS = 30; // the reply waits for Kafka's acknowledgement
  static final long EVIDENCE_WAIT_SECONDS = 30; // the broker ingests asynchronously

  public static void main(String[] args) throws Exception {
    File certs = new File(env("GOVBUS_CERTS"));
    String broker = env("GOVBUS_BROKER");
    String adapter = env("GOVBUS_CIVIL_REGISTRY");
    String subject = env("GOVBUS_SUBJECT");

    ManagedChannel asPortal = null;
    ManagedChannel asRegistry = null;
    boolean ok = false;
    try {
      asPortal = channel(broker, certs, PORTAL);
      asRegistry = channel(adapter, certs, CIVIL_REGISTRY);
      checkHealth(asPortal, broker);
      checkHealth(asRegistry, adapter);
      listServices(asPortal, broker);
      listServices(asRegistry, adapter);
      String recordId = publishBirthCertificate(asRegistry, subject);
      readEvidence(asPortal, subject, recordId);
      publishNotOwned(asRegistry, subject);
      ok = true;
    } catch (StatusRuntimeException e) {
      Status s = e.getStatus();
      // A TLS failure (untrusted server, refused client certificate) is
      // UNAVAILABLE with the handshake's exception as the cause.
      System.err.println("roundtrip failed: " + s.getCode() + " " + s.getDescription()
          + (s.getCause() != null ? " (" + rootCause(s.getCause()) + ")" : ""));
    } catch (Exception e) {
      System.err.println("roundtrip failed: " + (e.getMessage() != null ? e.getMessage() : e));
    } finally {
      shutdown(asPortal);
      shutdown(asRegistry);
    }
    if (!ok) {
      System.exit(1);
    }
  }

  /**
   * An mTLS channel: trusts only the bus CA and presents the client
   * certificate {@code <stem>.pem} with its key {@code <stem>.key} (PKCS#8 PEM).
   */
  static ManagedChannel channel(String target, File certs, String stem) throws Exception {
    SslContext tls =
        GrpcSslContexts.forClient()
            .trustManager(new File(certs, "ca.pem"))
            .keyManager(new File(certs, stem + ".pem"), new File(certs, stem + ".key"))
            .build();
    return NettyChannelBuilder.forTarget(target).sslContext(tls).build();
  }

  /** The standard gRPC health check of the whole server (service ""). */
  static void checkHealth(Channel channel, String addr) {
    HealthCheckResponse reply =
        HealthGrpc.newBlockingStub(channel)
            .withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS)
            .check(HealthCheckRequest.newBuilder().setService("").build());
    System.out.println("health " + addr + ": " + reply.getStatus());
    if (reply.getStatus() != HealthCheckResponse.ServingStatus.SERVING) {
      throw new IllegalStateException(addr + " is " + reply.getStatus());
    }
  }

  /** Lists the server's services through server reflection (grpc.reflection.v1). */
  static void listServices(Channel channel, String addr) throws Exception {
    CompletableFuture<List<String>> names = new CompletableFuture<>();
    StreamObserver<ServerReflectionRequest> requests =
        ServerReflectionGrpc.newStub(channel)
            .withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS)
            .serverReflectionInfo(
                new StreamObserver<ServerReflectionResponse>() {
                  @Override
                  public void onNext(ServerReflectionResponse reply) {
                    if (reply.hasListServicesResponse()) {
                      names.complete(
                          reply.getListServicesResponse().getServiceList().stream()
                              .map(ServiceResponse::getName)
                              .sorted()
                              .toList());
                    } else {
                      names.completeExceptionally(
                          new IllegalStateException("reflection answered " + reply));
                    }
                  }

                  @Override
                  public void onError(Throwable t) {
                    names.completeExceptionally(t);
                  }

                  @Override
                  public void onCompleted() {
                    names.completeExceptionally(
                        new IllegalStateException("reflection stream ended without an answer"));
                  }
                });
    requests.onNext(ServerReflectionRequest.newBuilder().setListServices("").build());
    requests.onCompleted();
    List<String> services = await(names);
    System.out.println("services " + addr + ": " + String.join(",", services));
  }

  /**
   * Publishes one birth certificate as the civil registry's system (the owner
   * of the record type) and returns the record id the adapter assigned.
   */
  static String publishBirthCertificate(Channel channel, String subject) {
    String certificateNumber = "I-TN " + ThreadLocalRandom.current().nextInt(1_000_000, 10_000_000);
    BirthCertificate certificate =
        BirthCertificate.newBuilder()
            .setCertificateNumber(certificateNumber)
            .setDateOfBirth(dateOfBirth(subject))
            .setChild(
                PersonName.newBuilder()
                    .setPinfl(subject)
                    .setFirstName("Laylo")
                    .setLastName("Yusupova"))
            .build();
    Record record = record("birth_certificate", subject, certificateNumber, certificate);
    PublishResult result = publish(channel, record);
    if (result.getOutcome() != PublishOutcome.PUBLISH_OUTCOME_ACCEPTED) {
      throw new IllegalStateException(
          "publish " + result.getOutcome() + ": " + result.getError());
    }
    System.out.println(
        "published: " + result.getRecordId() + " " + result.getTopic() + " "
            + result.getPartition() + " " + result.getOffset());
    return result.getRecordId();
  }

  /**
   * Asks the broker for the subject's birth certificate, as the portal, until
   * the record just published is there (NOT_FOUND meanwhile).
   */
  static void readEvidence(Channel channel, String subject, String recordId) throws Exception {
    GetEvidenceRequest request =
        GetEvidenceRequest.newBuilder()
            .setSubjectId(subject)
            .setRecordType("birth_certificate")
            .setPurpose("demo")
            .build();
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(EVIDENCE_WAIT_SECONDS);
    while (true) {
      try {
        List<Evidence> found =
            OnceOnlyGrpc.newBlockingStub(channel)
                .withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS)
                .getEvidence(request)
                .getEvidenceList();
        for (Evidence evidence : found) {
          Record record = evidence.getRecord();
          if (record.getRecordId().equals(recordId)) {
            System.out.println(
                "evidence: " + record.getRecordId() + " " + record.getRecordType() + " v"
                    + record.getVersion() + " " + evidence.getStatus());
            return;
          }
        }
        System.err.println("evidence: " + found.size() + " record(s), not yet " + recordId);
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.NOT_FOUND) {
          throw e;
        }
        System.err.println("evidence: not found yet");
      }
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException(
            "record " + recordId + " did not reach the broker within "
                + EVIDENCE_WAIT_SECONDS + " s");
      }
      Thread.sleep(500);
    }
  }

  /**
   * Tries to publish an address registration, a record type the interior
   * ministry owns: the adapter refuses it with PERMISSION_DENIED.
   */
  static void publishNotOwned(Channel channel, String subject) {
    AddressRegistration registration =
        AddressRegistration.newBuilder()
            .setResident(PersonName.newBuilder().setPinfl(subject).setLastName("Yusupova"))
            .setAddress(Address.newBuilder().setRegion("Toshkent shahri").setStreet("Amir Temur"))
            .setKind(RegistrationKind.REGISTRATION_KIND_PERMANENT)
            .setRegisteredOn("2020-01-01")
            .build();
    try {
      publish(channel, record("address_registration", subject, "R-" + subject, registration));
    } catch (StatusRuntimeException e) {
      Status s = e.getStatus();
      if (s.getCode() != Status.Code.PERMISSION_DENIED) {
        throw e;
      }
      System.out.println("refused: " + s.getCode() + " " + s.getDescription());
      return;
    }
    throw new IllegalStateException("the adapter accepted an address_registration");
  }

  /** Version 1 of an active record; the adapter assigns the id and signs it. */
  static Record record(String type, String subject, String key, Message payload) {
    Instant now = Instant.now();
    return Record.newBuilder()
        .setRecordType(type)
        .setSubjectId(subject)
        .setRecordKey(key)
        .setVersion(1)
        .setStatus(RecordStatus.RECORD_STATUS_ACTIVE)
        .setIssuedAt(
            Timestamp.newBuilder().setSeconds(now.getEpochSecond()).setNanos(now.getNano()))
        .setPayload(Any.pack(payload))
        .build();
  }

  static PublishResult publish(Channel channel, Record record) {
    return AgencyAdapterGrpc.newBlockingStub(channel)
        .withDeadlineAfter(PUBLISH_SECONDS, TimeUnit.SECONDS)
        .publish(PublishRequest.newBuilder().addRecords(record).build())
        .getResults(0);
  }

  /**
   * The birth date a PINFL encodes: digit 1 the century (1-2: 1800s, 3-4:
   * 1900s, 5-6: 2000s), then DDMMYY.
   */
  static String dateOfBirth(String pinfl) {
    if (!pinfl.matches("[1-6][0-9]{13}")) {
      return ""; // not a PINFL: the adapter says why
    }
    String century = String.valueOf(18 + (pinfl.charAt(0) - '1') / 2);
    return century + pinfl.substring(5, 7) + "-" + pinfl.substring(3, 5) + "-"
        + pinfl.substring(1, 3);
  }

  static String env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      System.err.println("roundtrip: set " + name);
      System.exit(2);
    }
    return value;
  }

  static <T> T await(CompletableFuture<T> future) throws Exception {
    try {
      return future.get(CALL_SECONDS, TimeUnit.SECONDS);
    } catch (java.util.concurrent.ExecutionException e) {
      if (e.getCause() instanceof StatusRuntimeException s) {
        throw s;
      }
      throw new IllegalStateException(e.getCause().getMessage(), e.getCause());
    }
  }

  static Throwable rootCause(Throwable t) {
    while (t.getCause() != null && t.getCause() != t) {
      t = t.getCause();
    }
    return t;
  }

  static void shutdown(ManagedChannel channel) throws InterruptedException {
    if (channel == null) {
      return;
    }
    channel.shutdown();
    if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
      channel.shutdownNow();
    }
  }
}
