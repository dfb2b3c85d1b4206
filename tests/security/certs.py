"""A throwaway PKI for TLS tests: a CA, a server certificate and a client certificate (PEM)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path, hosts: list[str]) -> Pki:
    """Files in `directory`; the server certificate is valid for `hosts` (names or IPs)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("fedmq test CA", ca_key.public_key(), ca_key, None, is_ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("fedmq test broker", server_key.public_key(), ca_key, ca, hosts=hosts)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("fedmq test client", client_key.public_key(), ca_key, ca)
    return Pki(_pem(directory / "ca.pem", ca), _pem(directory / "server.pem", server),
               _key(directory / "server.key", server_key), _pem(directory / "client.pem", client),
               _key(directory / "client.key", client_key))


def _certificate(name: str, public_key: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey,
                 issuer: x509.Certificate | None, *, is_ca: bool = False,
                 hosts: list[str] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(host) for host in hosts]), critical=False)
    if not is_ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if hosts else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)
    return path


def _key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o644)  # a test key: the broker's user in the container must read it
    return path
