//! The demo agencies' records, as rows of their outbox tables.

use govbus_proto::records::{
    Address, AddressRegistration, BirthCertificate, MarriageCertificate, PersonName,
    RegistrationKind, Sex,
};
use prost::Message;

use super::population::{Citizen, Date, Rng, female_surname, street_address};

/// One outbox row, as the agency's own system would write it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub record_type: &'static str,
    pub subject_id: String,
    pub record_key: String,
    pub version: i64,
    pub status: &'static str,
    pub issued_at_unix: i64,
    pub payload: Vec<u8>,
}

fn person(c: &Citizen) -> PersonName {
    PersonName {
        pinfl: c.pinfl.clone(),
        last_name: c.last_name.clone(),
        first_name: c.first_name.clone(),
        patronymic: c.patronymic.clone(),
    }
}

fn parent(first_name: &str, last_name: &str) -> PersonName {
    PersonName {
        first_name: first_name.to_string(),
        last_name: last_name.to_string(),
        ..Default::default()
    }
}

fn certificate_number(rng: &mut Rng, roman: &str, series: &str) -> String {
    format!("{roman}-{series} {:07}", rng.below(10_000_000))
}

/// Birth certificates for everyone and marriage certificates (one per
/// spouse) for the couples, from the civil registry (FHDY).
pub fn civil_registry(
    seed: u64,
    people: &[Citizen],
    couples: &[(usize, usize, Date)],
) -> Vec<OutboxRow> {
    let mut rng = Rng::new(seed ^ 0x6668_6479);
    let mut rows = Vec::with_capacity(people.len() + couples.len() * 2);
    for c in people {
        let number = certificate_number(&mut rng, "I", c.series());
        let registered = c.born.plus_days(1 + rng.below(10) as u32);
        let father_surname = c.last_name.trim_end_matches('a').to_string();
        let payload = BirthCertificate {
            certificate_number: number.clone(),
            child: Some(person(c)),
            sex: if c.male { Sex::Male } else { Sex::Female } as i32,
            date_of_birth: c.born.iso(),
            place_of_birth: format!("{}, {}", c.district, c.region_name()),
            mother: Some(parent(
                &c.mother_first_name,
                &female_surname(&father_surname),
            )),
            father: Some(parent(&c.father_first_name, &father_surname)),
            registry_office: format!("{} FHDY bo'limi", c.district),
            registered_on: registered.iso(),
        };
        rows.push(OutboxRow {
            record_type: "birth_certificate",
            subject_id: c.pinfl.clone(),
            record_key: number,
            version: 1,
            status: "active",
            issued_at_unix: registered.unix_seconds(),
            payload: payload.encode_to_vec(),
        });
    }
    for &(h, w, wed) in couples {
        let (husband, wife) = (&people[h], &people[w]);
        let number = certificate_number(&mut rng, "II", husband.series());
        // Some couples' certificates were later annulled by court decision.
        let annulled = rng.chance(3);
        let payload = MarriageCertificate {
            certificate_number: number.clone(),
            spouse_one: Some(person(husband)),
            spouse_two: Some(person(wife)),
            date_of_marriage: wed.iso(),
            registry_office: format!("{} FHDY bo'limi", husband.district),
            spouse_one_surname_after: husband.last_name.clone(),
            spouse_two_surname_after: if rng.chance(60) {
                female_surname(&husband.last_name)
            } else {
                wife.last_name.clone()
            },
        }
        .encode_to_vec();
        for spouse in [husband, wife] {
            rows.push(OutboxRow {
                record_type: "marriage_certificate",
                subject_id: spouse.pinfl.clone(),
                record_key: number.clone(),
                version: 1,
                status: "active",
                issued_at_unix: wed.unix_seconds(),
                payload: payload.clone(),
            });
            if annulled {
                rows.push(OutboxRow {
                    version: 2,
                    status: "revoked",
                    issued_at_unix: wed.unix_seconds() + 400 * 86_400,
                    ..rows.last().cloned().expect("just pushed")
                });
            }
        }
    }
    rows
}

/// Permanent address registrations from the Ministry of Internal Affairs;
/// about one in ten people moved once, so their registration has version 2.
pub fn interior(seed: u64, people: &[Citizen]) -> Vec<OutboxRow> {
    let mut rng = Rng::new(seed ^ 0x6d76_6421);
    let mut rows = Vec::with_capacity(people.len() * 11 / 10);
    for c in people {
        let moves = if rng.chance(10) { 2 } else { 1 };
        let mut registered = Date {
            year: c.born.year.max(1990),
            ..c.born
        };
        for version in 1..=moves {
            let (locality, street, house, apartment) = street_address(&mut rng);
            let payload = AddressRegistration {
                resident: Some(person(c)),
                address: Some(Address {
                    region: c.region_name().to_string(),
                    district: c.district.clone(),
                    locality,
                    street,
                    house,
                    apartment,
                }),
                kind: RegistrationKind::Permanent as i32,
                registered_on: registered.iso(),
                registered_until: String::new(),
            };
            rows.push(OutboxRow {
                record_type: "address_registration",
                subject_id: c.pinfl.clone(),
                record_key: "permanent".into(),
                version,
                status: "active",
                issued_at_unix: registered.unix_seconds(),
                payload: payload.encode_to_vec(),
            });
            registered.year = (registered.year + 1 + rng.below(15) as i32).min(2025);
        }
    }
    rows
}
