//! Every relation clients can discover, and the rows of the catalog tables
//! that describe them.
//!
//! The relation list is computed once from two sources: Tally's table
//! catalog (`schema::catalog`, schema `public`, each with its primary-key
//! index) and the system tables themselves (`pg_catalog`,
//! `information_schema`), whose columns come from their own definitions
//! here. `pg_class`, `pg_attribute`, `information_schema.tables` and
//! `.columns` are then all generated from that one list, so they agree with
//! each other and with what a query can actually read.

use super::builder::{BOOL, FLOAT4, INT2, INT4, INT8, OID, TEXT, TableBuilder, V, b, int, int2s, oids, s, texts};
use super::types::{self, PgType};
use super::{HEAP_AM_OID, INFORMATION_SCHEMA_OID, OWNER_NAME, OWNER_OID, PG_CATALOG_OID, PUBLIC_OID, table_oid};
use crate::engine::DATABASE;
use datafusion::arrow::datatypes::DataType;

/// One column of a relation, in PostgreSQL's terms.
#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub ty: &'static PgType,
    pub typmod: i32,
    pub not_null: bool,
    pub doc: String,
}

/// One relation (table, view or index).
#[derive(Debug, Clone)]
pub struct Relation {
    pub oid: u32,
    pub name: String,
    pub namespace: u32,
    /// `relkind`: r(table), v(iew), i(ndex).
    pub kind: char,
    pub attributes: Vec<Attribute>,
    pub doc: String,
    /// Primary-key column positions (1-based), for tables that have one.
    pub primary_key: Vec<i16>,
}

impl Relation {
    pub fn schema_name(&self) -> &'static str {
        namespace_name(self.namespace)
    }

    /// OID of this table's primary-key index (and of its constraint + 1).
    pub fn pkey_oid(&self) -> u32 {
        table_oid(&format!("{}_pkey", self.name))
    }
}

pub fn namespace_name(oid: u32) -> &'static str {
    match oid {
        PG_CATALOG_OID => "pg_catalog",
        INFORMATION_SCHEMA_OID => "information_schema",
        _ => "public",
    }
}

/// The system relations: schema, name, kind, OID (PostgreSQL 16's where it
/// has a fixed one, otherwise the stable hash).
const SYSTEM: &[(u32, &str, char, u32)] = &[
    (PG_CATALOG_OID, "pg_am", 'r', 2601),
    (PG_CATALOG_OID, "pg_attrdef", 'r', 2604),
    (PG_CATALOG_OID, "pg_attribute", 'r', 1249),
    (PG_CATALOG_OID, "pg_class", 'r', 1259),
    (PG_CATALOG_OID, "pg_collation", 'r', 3456),
    (PG_CATALOG_OID, "pg_constraint", 'r', 2606),
    (PG_CATALOG_OID, "pg_database", 'r', 1262),
    (PG_CATALOG_OID, "pg_description", 'r', 2609),
    (PG_CATALOG_OID, "pg_enum", 'r', 3501),
    (PG_CATALOG_OID, "pg_extension", 'r', 3079),
    (PG_CATALOG_OID, "pg_index", 'r', 2610),
    (PG_CATALOG_OID, "pg_inherits", 'r', 2611),
    (PG_CATALOG_OID, "pg_language", 'r', 2612),
    (PG_CATALOG_OID, "pg_namespace", 'r', 2615),
    (PG_CATALOG_OID, "pg_policy", 'r', 3256),
    (PG_CATALOG_OID, "pg_proc", 'r', 1255),
    (PG_CATALOG_OID, "pg_publication", 'r', 6104),
    (PG_CATALOG_OID, "pg_publication_namespace", 'r', 6237),
    (PG_CATALOG_OID, "pg_publication_rel", 'r', 6106),
    (PG_CATALOG_OID, "pg_range", 'r', 3541),
    (PG_CATALOG_OID, "pg_sequence", 'r', 2224),
    (PG_CATALOG_OID, "pg_shdescription", 'r', 2396),
    (PG_CATALOG_OID, "pg_statistic_ext", 'r', 3381),
    (PG_CATALOG_OID, "pg_tablespace", 'r', 1213),
    (PG_CATALOG_OID, "pg_trigger", 'r', 2620),
    (PG_CATALOG_OID, "pg_type", 'r', 1247),
    (PG_CATALOG_OID, "pg_matviews", 'v', 0),
    (PG_CATALOG_OID, "pg_roles", 'v', 0),
    (PG_CATALOG_OID, "pg_settings", 'v', 0),
    (PG_CATALOG_OID, "pg_stat_user_tables", 'v', 0),
    (PG_CATALOG_OID, "pg_tables", 'v', 0),
    (PG_CATALOG_OID, "pg_user", 'v', 0),
    (PG_CATALOG_OID, "pg_views", 'v', 0),
    (INFORMATION_SCHEMA_OID, "columns", 'v', 0),
    (INFORMATION_SCHEMA_OID, "key_column_usage", 'v', 0),
    (INFORMATION_SCHEMA_OID, "referential_constraints", 'v', 0),
    (INFORMATION_SCHEMA_OID, "schemata", 'v', 0),
    (INFORMATION_SCHEMA_OID, "table_constraints", 'v', 0),
    (INFORMATION_SCHEMA_OID, "tables", 'v', 0),
    (INFORMATION_SCHEMA_OID, "views", 'v', 0),
];

/// Columns of a system relation.
pub fn system_columns(name: &str) -> Vec<(&'static str, DataType)> {
    match name {
        "pg_am" => vec![("oid", OID), ("amname", TEXT), ("amhandler", TEXT), ("amtype", TEXT)],
        "pg_attrdef" => vec![("oid", OID), ("adrelid", OID), ("adnum", INT2), ("adbin", TEXT)],
        "pg_attribute" => vec![
            ("attrelid", OID),
            ("attname", TEXT),
            ("atttypid", OID),
            ("attstattarget", INT4),
            ("attlen", INT2),
            ("attnum", INT2),
            ("attndims", INT4),
            ("attcacheoff", INT4),
            ("atttypmod", INT4),
            ("attbyval", BOOL),
            ("attalign", TEXT),
            ("attstorage", TEXT),
            ("attcompression", TEXT),
            ("attnotnull", BOOL),
            ("atthasdef", BOOL),
            ("atthasmissing", BOOL),
            ("attidentity", TEXT),
            ("attgenerated", TEXT),
            ("attisdropped", BOOL),
            ("attislocal", BOOL),
            ("attinhcount", INT2),
            ("attcollation", OID),
            ("attacl", texts()),
            ("attoptions", texts()),
            ("attfdwoptions", texts()),
        ],
        "pg_class" => vec![
            ("oid", OID),
            ("relname", TEXT),
            ("relnamespace", OID),
            ("reltype", OID),
            ("reloftype", OID),
            ("relowner", OID),
            ("relam", OID),
            ("relfilenode", OID),
            ("reltablespace", OID),
            ("relpages", INT4),
            ("reltuples", FLOAT4),
            ("relallvisible", INT4),
            ("reltoastrelid", OID),
            ("relhasindex", BOOL),
            ("relisshared", BOOL),
            ("relpersistence", TEXT),
            ("relkind", TEXT),
            ("relnatts", INT2),
            ("relchecks", INT2),
            ("relhasrules", BOOL),
            ("relhastriggers", BOOL),
            ("relhassubclass", BOOL),
            ("relrowsecurity", BOOL),
            ("relforcerowsecurity", BOOL),
            ("relispopulated", BOOL),
            ("relreplident", TEXT),
            ("relispartition", BOOL),
            ("relrewrite", OID),
            ("relacl", texts()),
            ("reloptions", texts()),
            ("relpartbound", TEXT),
        ],
        "pg_collation" => vec![
            ("oid", OID),
            ("collname", TEXT),
            ("collnamespace", OID),
            ("collowner", OID),
            ("collprovider", TEXT),
            ("collisdeterministic", BOOL),
            ("collencoding", INT4),
            ("collcollate", TEXT),
            ("collctype", TEXT),
        ],
        "pg_constraint" => vec![
            ("oid", OID),
            ("conname", TEXT),
            ("connamespace", OID),
            ("contype", TEXT),
            ("condeferrable", BOOL),
            ("condeferred", BOOL),
            ("convalidated", BOOL),
            ("conrelid", OID),
            ("contypid", OID),
            ("conindid", OID),
            ("conparentid", OID),
            ("confrelid", OID),
            ("confupdtype", TEXT),
            ("confdeltype", TEXT),
            ("confmatchtype", TEXT),
            ("conislocal", BOOL),
            ("coninhcount", INT2),
            ("connoinherit", BOOL),
            ("conkey", int2s()),
            ("confkey", int2s()),
            ("conbin", TEXT),
        ],
        "pg_database" => vec![
            ("oid", OID),
            ("datname", TEXT),
            ("datdba", OID),
            ("encoding", INT4),
            ("datlocprovider", TEXT),
            ("datistemplate", BOOL),
            ("datallowconn", BOOL),
            ("datconnlimit", INT4),
            ("dattablespace", OID),
            ("datcollate", TEXT),
            ("datctype", TEXT),
            ("daticulocale", TEXT),
            ("daticurules", TEXT),
            ("datcollversion", TEXT),
            ("datacl", texts()),
        ],
        "pg_description" => vec![
            ("objoid", OID),
            ("classoid", OID),
            ("objsubid", INT4),
            ("description", TEXT),
        ],
        "pg_enum" => vec![
            ("oid", OID),
            ("enumtypid", OID),
            ("enumsortorder", FLOAT4),
            ("enumlabel", TEXT),
        ],
        "pg_extension" => vec![
            ("oid", OID),
            ("extname", TEXT),
            ("extowner", OID),
            ("extnamespace", OID),
            ("extrelocatable", BOOL),
            ("extversion", TEXT),
            ("extconfig", oids()),
            ("extcondition", texts()),
        ],
        "pg_index" => vec![
            ("indexrelid", OID),
            ("indrelid", OID),
            ("indnatts", INT2),
            ("indnkeyatts", INT2),
            ("indisunique", BOOL),
            ("indnullsnotdistinct", BOOL),
            ("indisprimary", BOOL),
            ("indisexclusion", BOOL),
            ("indimmediate", BOOL),
            ("indisclustered", BOOL),
            ("indisvalid", BOOL),
            ("indcheckxmin", BOOL),
            ("indisready", BOOL),
            ("indislive", BOOL),
            ("indisreplident", BOOL),
            ("indkey", int2s()),
            ("indcollation", oids()),
            ("indclass", oids()),
            ("indoption", int2s()),
            ("indexprs", TEXT),
            ("indpred", TEXT),
        ],
        "pg_inherits" => vec![
            ("inhrelid", OID),
            ("inhparent", OID),
            ("inhseqno", INT4),
            ("inhdetachpending", BOOL),
        ],
        "pg_language" => vec![
            ("oid", OID),
            ("lanname", TEXT),
            ("lanowner", OID),
            ("lanispl", BOOL),
            ("lanpltrusted", BOOL),
        ],
        "pg_namespace" => vec![("oid", OID), ("nspname", TEXT), ("nspowner", OID), ("nspacl", texts())],
        "pg_policy" => vec![
            ("oid", OID),
            ("polname", TEXT),
            ("polrelid", OID),
            ("polcmd", TEXT),
            ("polpermissive", BOOL),
            ("polroles", oids()),
            ("polqual", TEXT),
            ("polwithcheck", TEXT),
        ],
        "pg_proc" => vec![
            ("oid", OID),
            ("proname", TEXT),
            ("pronamespace", OID),
            ("proowner", OID),
            ("prolang", OID),
            ("procost", FLOAT4),
            ("prorows", FLOAT4),
            ("provariadic", OID),
            ("prokind", TEXT),
            ("prosecdef", BOOL),
            ("proleakproof", BOOL),
            ("proisstrict", BOOL),
            ("proretset", BOOL),
            ("provolatile", TEXT),
            ("proparallel", TEXT),
            ("pronargs", INT2),
            ("pronargdefaults", INT2),
            ("prorettype", OID),
            ("proargtypes", oids()),
            ("proallargtypes", oids()),
            ("proargmodes", texts()),
            ("proargnames", texts()),
            ("prosrc", TEXT),
            ("probin", TEXT),
            ("proacl", texts()),
        ],
        "pg_publication" => vec![
            ("oid", OID),
            ("pubname", TEXT),
            ("pubowner", OID),
            ("puballtables", BOOL),
            ("pubinsert", BOOL),
            ("pubupdate", BOOL),
            ("pubdelete", BOOL),
            ("pubtruncate", BOOL),
            ("pubviaroot", BOOL),
        ],
        "pg_publication_namespace" => vec![("oid", OID), ("pnpubid", OID), ("pnnspid", OID)],
        "pg_publication_rel" => vec![
            ("oid", OID),
            ("prpubid", OID),
            ("prrelid", OID),
            ("prqual", TEXT),
            ("prattrs", int2s()),
        ],
        "pg_range" => vec![
            ("rngtypid", OID),
            ("rngsubtype", OID),
            ("rngmultitypid", OID),
            ("rngcollation", OID),
            ("rngsubopc", OID),
        ],
        "pg_sequence" => vec![
            ("seqrelid", OID),
            ("seqtypid", OID),
            ("seqstart", INT8),
            ("seqincrement", INT8),
            ("seqmax", INT8),
            ("seqmin", INT8),
            ("seqcache", INT8),
            ("seqcycle", BOOL),
        ],
        "pg_shdescription" => vec![("objoid", OID), ("classoid", OID), ("description", TEXT)],
        "pg_statistic_ext" => vec![
            ("oid", OID),
            ("stxrelid", OID),
            ("stxname", TEXT),
            ("stxnamespace", OID),
            ("stxowner", OID),
            ("stxstattarget", INT4),
            ("stxkeys", int2s()),
            ("stxkind", texts()),
        ],
        "pg_tablespace" => vec![
            ("oid", OID),
            ("spcname", TEXT),
            ("spcowner", OID),
            ("spcacl", texts()),
            ("spcoptions", texts()),
        ],
        "pg_trigger" => vec![
            ("oid", OID),
            ("tgrelid", OID),
            ("tgparentid", OID),
            ("tgname", TEXT),
            ("tgfoid", OID),
            ("tgtype", INT2),
            ("tgenabled", TEXT),
            ("tgisinternal", BOOL),
            ("tgconstrrelid", OID),
            ("tgconstrindid", OID),
            ("tgconstraint", OID),
            ("tgdeferrable", BOOL),
            ("tginitdeferred", BOOL),
            ("tgnargs", INT2),
        ],
        "pg_type" => vec![
            ("oid", OID),
            ("typname", TEXT),
            ("typnamespace", OID),
            ("typowner", OID),
            ("typlen", INT2),
            ("typbyval", BOOL),
            ("typtype", TEXT),
            ("typcategory", TEXT),
            ("typispreferred", BOOL),
            ("typisdefined", BOOL),
            ("typdelim", TEXT),
            ("typrelid", OID),
            ("typsubscript", TEXT),
            ("typelem", OID),
            ("typarray", OID),
            ("typinput", TEXT),
            ("typoutput", TEXT),
            ("typreceive", TEXT),
            ("typsend", TEXT),
            ("typmodin", TEXT),
            ("typmodout", TEXT),
            ("typanalyze", TEXT),
            ("typalign", TEXT),
            ("typstorage", TEXT),
            ("typnotnull", BOOL),
            ("typbasetype", OID),
            ("typtypmod", INT4),
            ("typndims", INT4),
            ("typcollation", OID),
            ("typdefaultbin", TEXT),
            ("typdefault", TEXT),
            ("typacl", texts()),
        ],
        "pg_matviews" => vec![
            ("schemaname", TEXT),
            ("matviewname", TEXT),
            ("matviewowner", TEXT),
            ("tablespace", TEXT),
            ("hasindexes", BOOL),
            ("ispopulated", BOOL),
            ("definition", TEXT),
        ],
        "pg_roles" => vec![
            ("rolname", TEXT),
            ("rolsuper", BOOL),
            ("rolinherit", BOOL),
            ("rolcreaterole", BOOL),
            ("rolcreatedb", BOOL),
            ("rolcanlogin", BOOL),
            ("rolreplication", BOOL),
            ("rolconnlimit", INT4),
            ("rolpassword", TEXT),
            ("rolvaliduntil", TEXT),
            ("rolbypassrls", BOOL),
            ("rolconfig", texts()),
            ("oid", OID),
        ],
        "pg_settings" => vec![
            ("name", TEXT),
            ("setting", TEXT),
            ("unit", TEXT),
            ("category", TEXT),
            ("short_desc", TEXT),
            ("extra_desc", TEXT),
            ("context", TEXT),
            ("vartype", TEXT),
            ("source", TEXT),
            ("min_val", TEXT),
            ("max_val", TEXT),
            ("enumvals", texts()),
            ("boot_val", TEXT),
            ("reset_val", TEXT),
            ("sourcefile", TEXT),
            ("sourceline", INT4),
            ("pending_restart", BOOL),
        ],
        "pg_stat_user_tables" => vec![
            ("relid", OID),
            ("schemaname", TEXT),
            ("relname", TEXT),
            ("seq_scan", INT8),
            ("seq_tup_read", INT8),
            ("idx_scan", INT8),
            ("idx_tup_fetch", INT8),
            ("n_live_tup", INT8),
            ("n_dead_tup", INT8),
        ],
        "pg_tables" => vec![
            ("schemaname", TEXT),
            ("tablename", TEXT),
            ("tableowner", TEXT),
            ("tablespace", TEXT),
            ("hasindexes", BOOL),
            ("hasrules", BOOL),
            ("hastriggers", BOOL),
            ("rowsecurity", BOOL),
        ],
        "pg_user" => vec![
            ("usename", TEXT),
            ("usesysid", OID),
            ("usecreatedb", BOOL),
            ("usesuper", BOOL),
            ("userepl", BOOL),
            ("usebypassrls", BOOL),
            ("passwd", TEXT),
            ("valuntil", TEXT),
            ("useconfig", texts()),
        ],
        "pg_views" => vec![
            ("schemaname", TEXT),
            ("viewname", TEXT),
            ("viewowner", TEXT),
            ("definition", TEXT),
        ],
        "columns" => vec![
            ("table_catalog", TEXT),
            ("table_schema", TEXT),
            ("table_name", TEXT),
            ("column_name", TEXT),
            ("ordinal_position", INT4),
            ("column_default", TEXT),
            ("is_nullable", TEXT),
            ("data_type", TEXT),
            ("character_maximum_length", INT4),
            ("character_octet_length", INT4),
            ("numeric_precision", INT4),
            ("numeric_precision_radix", INT4),
            ("numeric_scale", INT4),
            ("datetime_precision", INT4),
            ("interval_type", TEXT),
            ("interval_precision", INT4),
            ("character_set_catalog", TEXT),
            ("character_set_schema", TEXT),
            ("character_set_name", TEXT),
            ("collation_catalog", TEXT),
            ("collation_schema", TEXT),
            ("collation_name", TEXT),
            ("domain_catalog", TEXT),
            ("domain_schema", TEXT),
            ("domain_name", TEXT),
            ("udt_catalog", TEXT),
            ("udt_schema", TEXT),
            ("udt_name", TEXT),
            ("scope_catalog", TEXT),
            ("scope_schema", TEXT),
            ("scope_name", TEXT),
            ("maximum_cardinality", INT4),
            ("dtd_identifier", TEXT),
            ("is_self_referencing", TEXT),
            ("is_identity", TEXT),
            ("identity_generation", TEXT),
            ("identity_start", TEXT),
            ("identity_increment", TEXT),
            ("identity_maximum", TEXT),
            ("identity_minimum", TEXT),
            ("identity_cycle", TEXT),
            ("is_generated", TEXT),
            ("generation_expression", TEXT),
            ("is_updatable", TEXT),
        ],
        "key_column_usage" => vec![
            ("constraint_catalog", TEXT),
            ("constraint_schema", TEXT),
            ("constraint_name", TEXT),
            ("table_catalog", TEXT),
            ("table_schema", TEXT),
            ("table_name", TEXT),
            ("column_name", TEXT),
            ("ordinal_position", INT4),
            ("position_in_unique_constraint", INT4),
        ],
        "referential_constraints" => vec![
            ("constraint_catalog", TEXT),
            ("constraint_schema", TEXT),
            ("constraint_name", TEXT),
            ("unique_constraint_catalog", TEXT),
            ("unique_constraint_schema", TEXT),
            ("unique_constraint_name", TEXT),
            ("match_option", TEXT),
            ("update_rule", TEXT),
            ("delete_rule", TEXT),
        ],
        "schemata" => vec![
            ("catalog_name", TEXT),
            ("schema_name", TEXT),
            ("schema_owner", TEXT),
            ("default_character_set_catalog", TEXT),
            ("default_character_set_schema", TEXT),
            ("default_character_set_name", TEXT),
            ("sql_path", TEXT),
        ],
        "table_constraints" => vec![
            ("constraint_catalog", TEXT),
            ("constraint_schema", TEXT),
            ("constraint_name", TEXT),
            ("table_catalog", TEXT),
            ("table_schema", TEXT),
            ("table_name", TEXT),
            ("constraint_type", TEXT),
            ("is_deferrable", TEXT),
            ("initially_deferred", TEXT),
            ("enforced", TEXT),
            ("nulls_distinct", TEXT),
        ],
        "tables" => vec![
            ("table_catalog", TEXT),
            ("table_schema", TEXT),
            ("table_name", TEXT),
            ("table_type", TEXT),
            ("self_referencing_column_name", TEXT),
            ("reference_generation", TEXT),
            ("user_defined_type_catalog", TEXT),
            ("user_defined_type_schema", TEXT),
            ("user_defined_type_name", TEXT),
            ("is_insertable_into", TEXT),
            ("is_typed", TEXT),
            ("commit_action", TEXT),
        ],
        "views" => vec![
            ("table_catalog", TEXT),
            ("table_schema", TEXT),
            ("table_name", TEXT),
            ("view_definition", TEXT),
            ("check_option", TEXT),
            ("is_updatable", TEXT),
            ("is_insertable_into", TEXT),
            ("is_trigger_updatable", TEXT),
            ("is_trigger_deletable", TEXT),
            ("is_trigger_insertable_into", TEXT),
        ],
        _ => Vec::new(),
    }
}

/// All relations: Tally's tables (with their primary-key indexes), then the
/// system relations.
pub fn relations() -> Vec<Relation> {
    let mut out = Vec::new();
    for t in schema::catalog::tables() {
        let attributes: Vec<Attribute> = t
            .columns
            .iter()
            .map(|c| Attribute {
                name: c.name.to_owned(),
                ty: types::of_column(c.ty),
                typmod: types::typmod_of_column(c.ty),
                not_null: !c.nullable,
                doc: c.doc.to_owned(),
            })
            .collect();
        let primary_key: Vec<i16> = t
            .primary_key()
            .iter()
            .filter_map(|k| t.column_index(k).and_then(|i| i16::try_from(i + 1).ok()))
            .collect();
        let rel = Relation {
            oid: table_oid(&t.name),
            name: t.name.clone(),
            namespace: PUBLIC_OID,
            kind: 'r',
            doc: t.doc.clone(),
            primary_key,
            attributes,
        };
        if !rel.primary_key.is_empty() {
            let index = Relation {
                oid: rel.pkey_oid(),
                name: format!("{}_pkey", rel.name),
                namespace: PUBLIC_OID,
                kind: 'i',
                doc: String::new(),
                primary_key: Vec::new(),
                attributes: rel
                    .primary_key
                    .iter()
                    .filter_map(|k| rel.attributes.get(usize::try_from(*k - 1).ok()?).cloned())
                    .collect(),
            };
            out.push(rel);
            out.push(index);
        } else {
            out.push(rel);
        }
    }
    for (namespace, name, kind, oid) in SYSTEM {
        let qualified = format!("{}.{}", namespace_name(*namespace), name);
        out.push(Relation {
            oid: if *oid == 0 { table_oid(&qualified) } else { *oid },
            name: (*name).to_owned(),
            namespace: *namespace,
            kind: *kind,
            doc: String::new(),
            primary_key: Vec::new(),
            attributes: system_columns(name)
                .into_iter()
                .map(|(n, dt)| Attribute {
                    name: n.to_owned(),
                    ty: types::of_arrow(&dt),
                    typmod: -1,
                    not_null: false,
                    doc: String::new(),
                })
                .collect(),
        });
    }
    out
}

fn system_table(name: &'static str) -> TableBuilder {
    TableBuilder::new(name, &system_columns(name))
}

/// Settings listed in `pg_settings` (their server defaults).
pub type SettingDefaults = &'static [(&'static str, &'static str)];

/// Rows of every system relation, keyed by (schema, name).
pub fn system_tables(rels: &[Relation], settings: SettingDefaults) -> Vec<(&'static str, TableBuilder)> {
    let mut out = Vec::new();
    for (namespace, name, _, _) in SYSTEM {
        let mut t = system_table(name);
        fill(&mut t, rels, settings);
        out.push((namespace_name(*namespace), t));
    }
    out
}

fn yes_no(v: bool) -> V {
    s(if v { "YES" } else { "NO" })
}

fn fill(t: &mut TableBuilder, rels: &[Relation], settings: SettingDefaults) {
    let tables = || rels.iter().filter(|r| r.kind != 'i');
    let user_tables = || rels.iter().filter(|r| r.kind == 'r' && r.namespace == PUBLIC_OID);
    let keyed = || user_tables().filter(|r| !r.primary_key.is_empty());
    let pk_names = |r: &Relation| -> Vec<String> {
        r.primary_key
            .iter()
            .filter_map(|k| r.attributes.get(usize::try_from(*k - 1).ok()?).map(|a| a.name.clone()))
            .collect()
    };
    match t.name {
        "pg_am" => {
            t.row(vec![int(HEAP_AM_OID), s("heap"), s("heap_tableam_handler"), s("t")]);
            t.row(vec![int(403), s("btree"), s("bthandler"), s("i")]);
        }
        "pg_attribute" => {
            for r in rels {
                for (i, a) in r.attributes.iter().enumerate() {
                    t.row(vec![
                        int(r.oid),
                        s(a.name.clone()),
                        int(a.ty.oid),
                        int(-1),
                        int(a.ty.len),
                        int(i64::try_from(i + 1).unwrap_or(0)),
                        int(i32::from(a.ty.category == 'A')),
                        int(-1),
                        int(a.typmod),
                        b(a.ty.by_val),
                        s(a.ty.align.to_string()),
                        s(if a.ty.len == -1 { "x" } else { "p" }),
                        s(""),
                        b(a.not_null),
                        b(false),
                        b(false),
                        s(""),
                        s(""),
                        b(false),
                        b(true),
                        int(0),
                        int(if a.ty.category == 'S' { 100 } else { 0 }),
                    ]);
                }
            }
        }
        "pg_class" => {
            for r in rels {
                t.row(vec![
                    int(r.oid),
                    s(r.name.clone()),
                    int(r.namespace),
                    int(0),
                    int(0),
                    int(OWNER_OID),
                    int(if r.kind == 'i' {
                        403
                    } else if r.kind == 'r' {
                        HEAP_AM_OID
                    } else {
                        0
                    }),
                    int(0),
                    int(0),
                    int(0),
                    V::Float(-1.0),
                    int(0),
                    int(0),
                    b(!r.primary_key.is_empty()),
                    b(false),
                    s("p"),
                    s(r.kind.to_string()),
                    int(i64::try_from(r.attributes.len()).unwrap_or(0)),
                    int(0),
                    b(false),
                    b(false),
                    b(false),
                    b(false),
                    b(false),
                    b(true),
                    s(if r.kind == 'r' { "d" } else { "n" }),
                    b(false),
                    int(0),
                ]);
            }
        }
        "pg_collation" => {
            t.row(vec![
                int(100),
                s("default"),
                int(PG_CATALOG_OID),
                int(OWNER_OID),
                s("d"),
                b(true),
                int(-1),
            ]);
            t.row(vec![
                int(950),
                s("C"),
                int(PG_CATALOG_OID),
                int(OWNER_OID),
                s("c"),
                b(true),
                int(-1),
                s("C"),
                s("C"),
            ]);
            t.row(vec![
                int(951),
                s("POSIX"),
                int(PG_CATALOG_OID),
                int(OWNER_OID),
                s("c"),
                b(true),
                int(-1),
                s("POSIX"),
                s("POSIX"),
            ]);
        }
        "pg_constraint" => {
            for r in keyed() {
                t.row(vec![
                    int(r.pkey_oid() + 1),
                    s(format!("{}_pkey", r.name)),
                    int(PUBLIC_OID),
                    s("p"),
                    b(false),
                    b(false),
                    b(true),
                    int(r.oid),
                    int(0),
                    int(r.pkey_oid()),
                    int(0),
                    int(0),
                    s(" "),
                    s(" "),
                    s(" "),
                    b(true),
                    int(0),
                    b(true),
                    V::Ints(r.primary_key.iter().map(|k| i64::from(*k)).collect()),
                ]);
            }
        }
        "pg_database" => {
            t.row(vec![
                int(DATABASE_OID),
                s(DATABASE),
                int(OWNER_OID),
                int(6),
                s("c"),
                b(false),
                b(true),
                int(-1),
                int(1663),
                s("C.UTF-8"),
                s("C.UTF-8"),
            ]);
        }
        "pg_description" => {
            for r in user_tables() {
                t.row(vec![int(r.oid), int(1259), int(0), s(r.doc.clone())]);
                for (i, a) in r.attributes.iter().enumerate() {
                    t.row(vec![
                        int(r.oid),
                        int(1259),
                        int(i64::try_from(i + 1).unwrap_or(0)),
                        s(a.doc.clone()),
                    ]);
                }
            }
        }
        "pg_index" => {
            for r in keyed() {
                let n = i64::try_from(r.primary_key.len()).unwrap_or(0);
                t.row(vec![
                    int(r.pkey_oid()),
                    int(r.oid),
                    int(n),
                    int(n),
                    b(true),
                    b(false),
                    b(true),
                    b(false),
                    b(true),
                    b(false),
                    b(true),
                    b(false),
                    b(true),
                    b(true),
                    b(false),
                    V::Ints(r.primary_key.iter().map(|k| i64::from(*k)).collect()),
                    V::Ints(vec![0; r.primary_key.len()]),
                    V::Ints(vec![0; r.primary_key.len()]),
                    V::Ints(vec![0; r.primary_key.len()]),
                ]);
            }
        }
        "pg_language" => {
            for (oid, name) in [(12, "internal"), (13, "c"), (14, "sql")] {
                t.row(vec![int(oid), s(name), int(OWNER_OID), b(false), b(oid == 14)]);
            }
        }
        "pg_namespace" => {
            for oid in [PG_CATALOG_OID, PUBLIC_OID, INFORMATION_SCHEMA_OID] {
                t.row(vec![int(oid), s(namespace_name(oid)), int(OWNER_OID)]);
            }
        }
        "pg_proc" => {
            t.row(vec![
                int(table_oid("public.unique_visitors")),
                s("unique_visitors"),
                int(PUBLIC_OID),
                int(OWNER_OID),
                int(12),
                V::Float(1.0),
                V::Float(1000.0),
                int(0),
                s("f"),
                b(false),
                b(false),
                b(true),
                b(true),
                s("s"),
                s("s"),
                int(3),
                int(0),
                int(2249),
                V::Ints(vec![25, 1184, 1184]),
            ]);
        }
        "pg_tablespace" => {
            t.row(vec![int(1663), s("pg_default"), int(OWNER_OID)]);
            t.row(vec![int(1664), s("pg_global"), int(OWNER_OID)]);
        }
        "pg_type" => {
            for ty in types::TYPES {
                let prefix = if ty.category == 'A' { "array" } else { ty.name };
                t.row(vec![
                    int(ty.oid),
                    s(ty.name),
                    int(PG_CATALOG_OID),
                    int(OWNER_OID),
                    int(ty.len),
                    b(ty.by_val),
                    s(ty.kind.to_string()),
                    s(ty.category.to_string()),
                    b(matches!(ty.oid, 16 | 25 | 701 | 1184 | 26)),
                    b(true),
                    s(","),
                    int(0),
                    s(if ty.elem != 0 { "array_subscript_handler" } else { "-" }),
                    int(ty.elem),
                    int(ty.array),
                    s(format!("{prefix}_in")),
                    s(format!("{prefix}_out")),
                    s(format!("{prefix}_recv")),
                    s(format!("{prefix}_send")),
                    s("-"),
                    s("-"),
                    s("-"),
                    s(ty.align.to_string()),
                    s(if ty.len == -1 { "x" } else { "p" }),
                    b(false),
                    int(0),
                    int(-1),
                    int(0),
                    int(if ty.category == 'S' { 100 } else { 0 }),
                ]);
            }
        }
        "pg_roles" => {
            t.row(vec![
                s(OWNER_NAME),
                b(false),
                b(true),
                b(false),
                b(false),
                b(true),
                b(false),
                int(-1),
                s("********"),
                V::Null,
                b(false),
                V::Null,
                int(OWNER_OID),
            ]);
        }
        "pg_user" => {
            t.row(vec![
                s(OWNER_NAME),
                int(OWNER_OID),
                b(false),
                b(false),
                b(false),
                b(false),
                s("********"),
            ]);
        }
        "pg_settings" => {
            for (name, value) in settings {
                t.row(vec![
                    s(*name),
                    s(*value),
                    V::Null,
                    s("Client Connection Defaults"),
                    s(""),
                    V::Null,
                    s("user"),
                    s("string"),
                    s("default"),
                    V::Null,
                    V::Null,
                    V::Null,
                    s(*value),
                    s(*value),
                    V::Null,
                    V::Null,
                    b(false),
                ]);
            }
        }
        "pg_stat_user_tables" => {
            for r in user_tables() {
                t.row(vec![
                    int(r.oid),
                    s("public"),
                    s(r.name.clone()),
                    int(0),
                    int(0),
                    int(0),
                    int(0),
                    int(0),
                    int(0),
                ]);
            }
        }
        "pg_tables" => {
            for r in tables().filter(|r| r.kind == 'r') {
                t.row(vec![
                    s(r.schema_name()),
                    s(r.name.clone()),
                    s(OWNER_NAME),
                    V::Null,
                    b(!r.primary_key.is_empty()),
                    b(false),
                    b(false),
                    b(false),
                ]);
            }
        }
        "pg_views" => {
            for r in tables().filter(|r| r.kind == 'v') {
                t.row(vec![s(r.schema_name()), s(r.name.clone()), s(OWNER_NAME), V::Null]);
            }
        }
        "columns" => {
            for r in tables() {
                for (i, a) in r.attributes.iter().enumerate() {
                    let (precision, radix, scale) = match (a.ty.oid, a.typmod) {
                        (20, _) => (V::Int(64), V::Int(2), V::Int(0)),
                        (21, _) => (V::Int(16), V::Int(2), V::Int(0)),
                        (23 | 26, _) => (V::Int(32), V::Int(2), V::Int(0)),
                        (700, _) => (V::Int(24), V::Int(2), V::Null),
                        (701, _) => (V::Int(53), V::Int(2), V::Null),
                        (1700, m) if m >= 4 => (
                            V::Int(i64::from(((m - 4) >> 16) & 0xffff)),
                            V::Int(10),
                            V::Int(i64::from((m - 4) & 0xffff)),
                        ),
                        (1700, _) => (V::Null, V::Int(10), V::Null),
                        _ => (V::Null, V::Null, V::Null),
                    };
                    let datetime_precision = if matches!(a.ty.oid, 1082) {
                        V::Int(0)
                    } else if matches!(a.ty.oid, 1114 | 1184 | 1083) {
                        V::Int(6)
                    } else {
                        V::Null
                    };
                    let (data_type, udt) = if a.ty.category == 'A' {
                        ("ARRAY".to_owned(), a.ty.name)
                    } else {
                        (a.ty.sql_name.trim_matches('"').to_owned(), a.ty.name)
                    };
                    let octet = if a.ty.category == 'S' {
                        V::Int(1_073_741_824)
                    } else {
                        V::Null
                    };
                    t.row(vec![
                        s(DATABASE),
                        s(r.schema_name()),
                        s(r.name.clone()),
                        s(a.name.clone()),
                        int(i64::try_from(i + 1).unwrap_or(0)),
                        V::Null,
                        yes_no(!a.not_null),
                        s(data_type),
                        V::Null,
                        octet,
                        precision,
                        radix,
                        scale,
                        datetime_precision,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        s(DATABASE),
                        s("pg_catalog"),
                        s(udt),
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        s((i + 1).to_string()),
                        s("NO"),
                        s("NO"),
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        V::Null,
                        s("NO"),
                        s("NEVER"),
                        V::Null,
                        s("NO"),
                    ]);
                }
            }
        }
        "key_column_usage" => {
            for r in keyed() {
                for (i, name) in pk_names(r).into_iter().enumerate() {
                    t.row(vec![
                        s(DATABASE),
                        s("public"),
                        s(format!("{}_pkey", r.name)),
                        s(DATABASE),
                        s("public"),
                        s(r.name.clone()),
                        s(name),
                        int(i64::try_from(i + 1).unwrap_or(0)),
                    ]);
                }
            }
        }
        "schemata" => {
            for oid in [PG_CATALOG_OID, PUBLIC_OID, INFORMATION_SCHEMA_OID] {
                t.row(vec![s(DATABASE), s(namespace_name(oid)), s(OWNER_NAME)]);
            }
        }
        "table_constraints" => {
            for r in keyed() {
                t.row(vec![
                    s(DATABASE),
                    s("public"),
                    s(format!("{}_pkey", r.name)),
                    s(DATABASE),
                    s("public"),
                    s(r.name.clone()),
                    s("PRIMARY KEY"),
                    s("NO"),
                    s("NO"),
                    s("YES"),
                    V::Null,
                ]);
            }
        }
        "tables" => {
            for r in tables() {
                let base = r.kind == 'r';
                t.row(vec![
                    s(DATABASE),
                    s(r.schema_name()),
                    s(r.name.clone()),
                    s(if base { "BASE TABLE" } else { "VIEW" }),
                    V::Null,
                    V::Null,
                    V::Null,
                    V::Null,
                    V::Null,
                    s("NO"),
                    s("NO"),
                    V::Null,
                ]);
            }
        }
        "views" => {
            for r in tables().filter(|r| r.kind == 'v') {
                t.row(vec![
                    s(DATABASE),
                    s(r.schema_name()),
                    s(r.name.clone()),
                    V::Null,
                    s("NONE"),
                    s("NO"),
                    s("NO"),
                    s("NO"),
                    s("NO"),
                    s("NO"),
                ]);
            }
        }
        _ => {}
    }
}

/// OID of the one database.
pub const DATABASE_OID: u32 = 16_384;
