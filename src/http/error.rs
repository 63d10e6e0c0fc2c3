//! What the realm answers when it issues no token: one variant per status, rendered in the
//! registry error format (`{"errors": [{code, message}]}`) with the headers clients act on.

use poem::http::{header, StatusCode};
use poem::Response;

use super::errors_response;
use crate::identity::AuthError;
use crate::issuing::IssueError;
use crate::metrics::Outcome;
use crate::policy::PolicyError;

#[derive(Debug, Clone)]
pub enum RealmError {
    BadRequest {
        code: &'static str,
        message: String,
    },
    /// A 400 too, counted apart: more scopes, checks or bytes than allowed.
    TooLarge {
        code: &'static str,
        message: String,
    },
    Unauthorized(String),
    Unavailable(String),
    TooManyRequests {
        retry_after: u64,
    },
    Internal,
}

impl RealmError {
    pub(super) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub(super) fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::TooLarge {
            code,
            message: message.into(),
        }
    }

    /// The metrics and audit outcome.
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Self::BadRequest { .. } => Outcome::BadRequest,
            Self::TooLarge { .. } => Outcome::TooLarge,
            Self::Unauthorized(_) => Outcome::Unauthorized,
            Self::Unavailable(_) => Outcome::Unavailable,
            Self::TooManyRequests { .. } => Outcome::Damped,
            Self::Internal => Outcome::Internal,
        }
    }

    /// What the client is told, for the audit log's `reason`.
    pub(super) fn message(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::BadRequest { message, .. }
            | Self::TooLarge { message, .. }
            | Self::Unauthorized(message)
            | Self::Unavailable(message) => message.into(),
            Self::TooManyRequests { retry_after } => {
                format!("too many failed logins from this address; retry after {retry_after} s")
                    .into()
            }
            Self::Internal => "the token could not be issued".into(),
        }
    }

    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::TooLarge { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::TooLarge { code, .. } => code,
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::TooManyRequests { .. } => "TOOMANYREQUESTS",
            Self::Internal => "INTERNAL",
        }
    }

    /// The `{"errors":[...]}` answer with the headers clients act on: the Basic challenge of a
    /// 401, `Retry-After` of a 503 or 429.
    pub(super) fn into_response(self, basic_realm: &str) -> Response {
        let message = match &self {
            Self::TooManyRequests { retry_after } => format!(
                "too many failed logins from this address; wait {retry_after} s and check the credentials"
            )
            .into(),
            _ => self.message(),
        };
        let mut r = errors_response(self.status(), self.code(), &message);
        let extra = match &self {
            Self::Unauthorized(_) => Some((
                header::WWW_AUTHENTICATE,
                format!("Basic realm=\"{}\"", basic_realm.replace('"', "")),
            )),
            Self::Unavailable(_) => Some((header::RETRY_AFTER, "5".to_string())),
            Self::TooManyRequests { retry_after } => {
                Some((header::RETRY_AFTER, retry_after.to_string()))
            }
            _ => None,
        };
        if let Some((name, value)) = extra {
            if let Ok(v) = value.parse() {
                r.headers_mut().insert(name, v);
            }
        }
        r
    }
}

impl From<PolicyError> for RealmError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::TooManyChecks(_) => Self::too_large("INVALID_SCOPE", e.to_string()),
            PolicyError::Unavailable(how) => {
                Self::Unavailable(format!("identity service unavailable: {how}"))
            }
        }
    }
}

impl From<&IssueError> for RealmError {
    fn from(e: &IssueError) -> Self {
        match e {
            IssueError::Invalid { code, message } => Self::bad(code, message.clone()),
            IssueError::TooLarge { code, message } => Self::too_large(code, message.clone()),
            IssueError::NoCredentials => Self::Unauthorized(super::realm::NO_CREDENTIALS.into()),
            IssueError::Auth(a) => a.clone().into(),
            IssueError::Policy(p) => p.clone().into(),
            IssueError::Sign => Self::Internal,
        }
    }
}

impl From<AuthError> for RealmError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => Self::Unauthorized(e.to_string()),
            AuthError::Refused(msg) => Self::Unauthorized(msg),
            AuthError::Unavailable(msg) => {
                Self::Unavailable(format!("identity service unavailable: {msg}"))
            }
            AuthError::TooManyAttempts { retry_after } => Self::TooManyRequests { retry_after },
        }
    }
}
