//! Who a record is about: a person (PINFL) or an organisation (STIR).

use std::fmt;

/// A validated subject identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectId {
    /// Personal identification number of an individual: 14 digits.
    Pinfl(String),
    /// Taxpayer identification number of an organisation: 9 digits.
    Stir(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("is empty; expected a PINFL (14 digits) or a STIR (9 digits)")]
    Empty,
    #[error("must contain only digits; found {0:?}")]
    NotDigits(char),
    #[error("has {0} digits; expected a PINFL (14 digits) or a STIR (9 digits)")]
    WrongLength(usize),
    #[error("is not a valid PINFL: first digit {0} must be 1-6 (sex and century of birth)")]
    PinflCentury(char),
    #[error("is not a valid PINFL: digits 2-7 must be a birth date DDMMYY, got {0}")]
    PinflBirthDate(String),
    #[error("is not a valid STIR: it cannot start with 0")]
    StirLeadingZero,
}

impl SubjectId {
    pub fn parse(raw: &str) -> Result<Self, SubjectError> {
        if raw.is_empty() {
            return Err(SubjectError::Empty);
        }
        if let Some(bad) = raw.chars().find(|c| !c.is_ascii_digit()) {
            return Err(SubjectError::NotDigits(bad));
        }
        match raw.len() {
            14 => {
                let century = raw.as_bytes()[0] as char;
                if !('1'..='6').contains(&century) {
                    return Err(SubjectError::PinflCentury(century));
                }
                let day: u32 = raw[1..3].parse().unwrap_or(0);
                let month: u32 = raw[3..5].parse().unwrap_or(0);
                if !(1..=31).contains(&day) || !(1..=12).contains(&month) {
                    return Err(SubjectError::PinflBirthDate(raw[1..7].to_string()));
                }
                Ok(Self::Pinfl(raw.to_string()))
            }
            9 => {
                if raw.starts_with('0') {
                    return Err(SubjectError::StirLeadingZero);
                }
                Ok(Self::Stir(raw.to_string()))
            }
            n => Err(SubjectError::WrongLength(n)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Pinfl(s) | Self::Stir(s) => s,
        }
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_pinfl_and_stir() {
        assert_eq!(
            SubjectId::parse("31505901234567"),
            Ok(SubjectId::Pinfl("31505901234567".into()))
        );
        assert_eq!(
            SubjectId::parse("301234567"),
            Ok(SubjectId::Stir("301234567".into()))
        );
    }

    #[test]
    fn rejects_with_reason() {
        assert_eq!(SubjectId::parse(""), Err(SubjectError::Empty));
        assert_eq!(
            SubjectId::parse("3150590123456"),
            Err(SubjectError::WrongLength(13))
        );
        assert_eq!(
            SubjectId::parse("3150590123456x"),
            Err(SubjectError::NotDigits('x'))
        );
        assert_eq!(
            SubjectId::parse("91505901234567"),
            Err(SubjectError::PinflCentury('9'))
        );
        assert_eq!(
            SubjectId::parse("33213901234567"),
            Err(SubjectError::PinflBirthDate("321390".into()))
        );
        assert_eq!(
            SubjectId::parse("012345678"),
            Err(SubjectError::StirLeadingZero)
        );
    }
}
