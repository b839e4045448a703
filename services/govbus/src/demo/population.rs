//! A deterministic synthetic population: citizens with valid-format PINFLs,
//! and the civil-registry and interior-ministry records about them.

use std::collections::HashSet;

use super::names::{FEMALE_NAMES, MAHALLAS, MALE_NAMES, REGIONS, STREETS, SURNAMES};

/// SplitMix64: tiny, and its output is fixed forever for a seed, which a
/// general-purpose RNG crate does not promise across versions.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    pub fn days_since_epoch(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn unix_seconds(self) -> i64 {
        self.days_since_epoch() * 86_400
    }

    /// A later date in the same month (days are capped at 28 to stay valid).
    pub fn plus_days(self, days: u32) -> Self {
        Self {
            day: (self.day + days).min(28),
            ..self
        }
    }

    pub fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[derive(Debug, Clone)]
pub struct Citizen {
    pub pinfl: String,
    pub male: bool,
    pub first_name: String,
    pub last_name: String,
    pub patronymic: String,
    pub father_first_name: String,
    pub mother_first_name: String,
    pub born: Date,
    pub region: usize,
    pub district: String,
}

impl Citizen {
    pub fn series(&self) -> &'static str {
        REGIONS[self.region].1
    }

    pub fn region_name(&self) -> &'static str {
        REGIONS[self.region].0
    }
}

pub fn female_surname(male: &str) -> String {
    format!("{male}a")
}

/// The PINFL of someone born on `born`: century-and-sex digit, DDMMYY,
/// a three-digit district code, a serial, and a check digit (weights 7-3-1).
fn pinfl(rng: &mut Rng, male: bool, born: Date) -> String {
    let century = match (born.year >= 2000, male) {
        (false, true) => 3,
        (false, false) => 4,
        (true, true) => 5,
        (true, false) => 6,
    };
    let body = format!(
        "{century}{:02}{:02}{:02}{:03}{:03}",
        born.day,
        born.month,
        born.year % 100,
        100 + rng.below(900),
        rng.below(1000)
    );
    let check: u32 = body
        .bytes()
        .zip([7, 3, 1].iter().cycle())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum::<u32>()
        % 10;
    format!("{body}{check}")
}

/// `count` citizens, the same ones for the same seed.
pub fn citizens(seed: u64, count: usize) -> Vec<Citizen> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut people = Vec::with_capacity(count);
    while people.len() < count {
        let male = rng.chance(50);
        let born = Date {
            year: 1950 + rng.below(60) as i32,
            month: 1 + rng.below(12) as u32,
            day: 1 + rng.below(28) as u32,
        };
        let pinfl = pinfl(&mut rng, male, born);
        if !seen.insert(pinfl.clone()) {
            continue;
        }
        let father = rng.pick(MALE_NAMES).to_string();
        let surname = *rng.pick(SURNAMES);
        let region = rng.below(REGIONS.len() as u64) as usize;
        let district = rng.pick(REGIONS[region].2).to_string();
        people.push(Citizen {
            pinfl,
            male,
            first_name: if male {
                rng.pick(MALE_NAMES)
            } else {
                rng.pick(FEMALE_NAMES)
            }
            .to_string(),
            last_name: if male {
                surname.to_string()
            } else {
                female_surname(surname)
            },
            patronymic: format!("{father} {}", if male { "o'g'li" } else { "qizi" }),
            father_first_name: father,
            mother_first_name: rng.pick(FEMALE_NAMES).to_string(),
            born,
            region,
            district,
        });
    }
    people
}

/// Couples (husband index, wife index, wedding date) among adults born
/// before 2000; about a third of the population is married.
pub fn marriages(seed: u64, people: &[Citizen]) -> Vec<(usize, usize, Date)> {
    let mut rng = Rng::new(seed ^ 0x6d61_7272);
    let adults = |male: bool| {
        people
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.male == male && p.born.year < 2000)
            .map(|(i, _)| i)
    };
    let men: Vec<usize> = adults(true).collect();
    let women: Vec<usize> = adults(false).collect();
    let mut couples = Vec::new();
    for (&h, &w) in men.iter().zip(women.iter()) {
        if !rng.chance(70) {
            continue;
        }
        let older = people[h].born.max(people[w].born);
        let wed = Date {
            year: older.year + 20 + rng.below(8) as i32,
            month: 1 + rng.below(12) as u32,
            day: 1 + rng.below(28) as u32,
        };
        couples.push((h, w, wed));
    }
    couples
}

/// (mahalla, street, house, apartment) of a random home.
pub fn street_address(rng: &mut Rng) -> (String, String, String, String) {
    (
        rng.pick(MAHALLAS).to_string(),
        rng.pick(STREETS).to_string(),
        (1 + rng.below(120)).to_string(),
        if rng.chance(60) {
            (1 + rng.below(80)).to_string()
        } else {
            String::new()
        },
    )
}

#[cfg(test)]
mod tests {
    use govbus_core::SubjectId;

    use super::*;

    #[test]
    fn population_is_deterministic_and_valid() {
        let a = citizens(7, 300);
        let b = citizens(7, 300);
        assert_eq!(a.len(), 300);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.pinfl == y.pinfl && x.first_name == y.first_name)
        );
        for c in &a {
            assert!(
                matches!(SubjectId::parse(&c.pinfl), Ok(SubjectId::Pinfl(_))),
                "{}",
                c.pinfl
            );
        }
        let couples = marriages(7, &a);
        assert!(couples.len() > 40, "{}", couples.len());
        assert!(couples.iter().all(|&(h, w, _)| a[h].male && !a[w].male));
    }

    #[test]
    fn dates_convert_to_unix_days() {
        assert_eq!(
            Date {
                year: 1970,
                month: 1,
                day: 1
            }
            .days_since_epoch(),
            0
        );
        assert_eq!(
            Date {
                year: 2000,
                month: 3,
                day: 1
            }
            .days_since_epoch(),
            11_017
        );
        assert_eq!(
            Date {
                year: 1969,
                month: 12,
                day: 31
            }
            .days_since_epoch(),
            -1
        );
    }
}
