mod query;
