//! Shellac's proxy core as a library, so integration tests can start the
//! proxy in-process. Module names mirror Varnish's source files.
pub mod cache_acl;
pub mod cache_backend;
pub mod cache_backend_probe;
pub mod cache_ban;
pub mod cache_deliver;
pub mod cache_esi;
pub mod cache_expire;
pub mod cache_fetch;
pub mod cache_hash;
pub mod cache_http;
pub mod cache_http1;
pub mod cache_http1_fetch;
pub mod cache_obj;
pub mod cache_req_fsm;
pub mod cache_vcl;
pub mod demo_origin;
pub mod mgt_child;
pub mod mgt_cli;
pub mod mgt_param;
pub mod sandbox;
pub mod vmod_directors;
pub mod vmod_std;
pub mod vre;
pub mod vrt;
pub mod vrt_ctx;
pub mod vrt_var;
