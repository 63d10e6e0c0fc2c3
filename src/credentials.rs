//! A caller's Basic credentials: what the realm parses, the identity sources check, and the
//! upstream client forwards. Its own module so that `upstream` (a client the identity side
//! uses) needs nothing from `identity`.

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The password is never shown, whatever prints the credentials.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}
