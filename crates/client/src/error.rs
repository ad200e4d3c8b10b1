//! Errors that say what went wrong and what to do about it.

use std::fmt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What a Weir client call can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No broker answers at `bootstrap` (the circuit breaker is open).
    Unreachable { bootstrap: String, cause: String },
    /// The broker or the client library refused `what`.
    Kafka {
        what: String,
        code: Option<RDKafkaErrorCode>,
        message: String,
    },
    /// A setting or argument that cannot work.
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `what` failed with a librdkafka error.
    pub fn kafka(what: impl Into<String>, error: &KafkaError) -> Error {
        let code = error.rdkafka_error_code();
        let message = match code {
            Some(code) => code.to_string(),
            None => error.to_string(),
        };
        Error::Kafka {
            what: what.into(),
            code,
            message,
        }
    }

    /// `what` failed with an error code from the broker.
    pub fn code(what: impl Into<String>, code: RDKafkaErrorCode) -> Error {
        Error::Kafka {
            what: what.into(),
            code: Some(code),
            message: code.to_string(),
        }
    }

    /// The Kafka or librdkafka error code, if the error has one.
    pub fn error_code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Error::Kafka { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether trying the same call again later can succeed.
    pub fn is_retriable(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self.error_code(),
            Some(
                C::BrokerTransportFailure
                    | C::AllBrokersDown
                    | C::OperationTimedOut
                    | C::RequestTimedOut
                    | C::TimedOutQueue
                    | C::MessageTimedOut
                    | C::LeaderNotAvailable
                    | C::NotLeaderForPartition
                    | C::CoordinatorLoadInProgress
                    | C::CoordinatorNotAvailable
                    | C::NotCoordinator
                    | C::NetworkException
                    | C::WaitingForCoordinator
            )
        )
    }

    /// The advice appended to the message, by error code.
    fn hint(&self) -> &'static str {
        use RDKafkaErrorCode as C;
        match self.error_code() {
            Some(C::UnknownTopicOrPartition | C::UnknownTopic) => {
                " (create it with `weir topic create NAME`, or check the name with `weir topic list`)"
            }
            Some(C::UnknownPartition) => " (`weir topic describe` shows the partitions)",
            Some(C::TopicAlreadyExists) => " (choose another name, or `weir topic describe` it)",
            Some(C::InvalidPartitions) => {
                " (partitions must be at least 1, and a topic's count can only grow)"
            }
            Some(C::InvalidConfig) => {
                " (`weir topic describe NAME` lists the topic configs and their values)"
            }
            Some(C::NonEmptyGroup) => " (stop the group's consumers first)",
            Some(C::GroupIdNotFound | C::UnknownGroup) => " (`weir group list` shows the groups)",
            Some(C::MessageSizeTooLarge) => {
                " (send smaller records, or raise the topic's max.message.bytes)"
            }
            Some(C::MessageTimedOut | C::OperationTimedOut | C::RequestTimedOut) => {
                " (the broker did not answer in time: is `weir serve` running and reachable?)"
            }
            _ => "",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { bootstrap, cause } => write!(
                f,
                "cannot reach {bootstrap}: {cause} — is `weir serve` running?"
            ),
            Error::Kafka { what, message, .. } => write!(f, "{what}: {message}{}", self.hint()),
            Error::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// The short cause in a librdkafka transport complaint, e.g. "127.0.0.1:9092/bootstrap:
/// Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)" →
/// "connection refused".
pub(crate) fn transport_cause(reason: &str) -> String {
    let tail = reason
        .rsplit_once("failed: ")
        .map_or(reason, |(_, tail)| tail);
    let cause = tail.split(" (after").next().unwrap_or(tail).trim();
    let mut chars = cause.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::Unreachable {
            bootstrap: "127.0.0.1:9092".into(),
            cause: transport_cause(
                "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection \
                 refused (after 0ms in state CONNECT)",
            ),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach 127.0.0.1:9092: connection refused — is `weir serve` running?"
        );
        let e = Error::code("create topic orders", RDKafkaErrorCode::TopicAlreadyExists);
        assert!(e.to_string().starts_with("create topic orders: "), "{e}");
        assert!(e.to_string().contains("Topic already exists"), "{e}");
        assert!(e.to_string().contains("choose another name"), "{e}");
        assert!(!e.is_retriable());
        assert!(Error::code("x", RDKafkaErrorCode::NotCoordinator).is_retriable());
        assert_eq!(transport_cause("plain words"), "plain words");
    }
}
