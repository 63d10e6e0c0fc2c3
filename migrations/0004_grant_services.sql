-- A grant may name the services (registries) it applies to, as a glob; none is every service
-- the issuer serves (`token.services`).
ALTER TABLE grants ADD COLUMN service TEXT;
