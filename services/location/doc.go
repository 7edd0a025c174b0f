// Package location is the Location service, owner of the zip_code table:
// reference data under common ownership. Many services read zip codes; only
// location writes them. Others read through its API — GET /zipcodes/{zip},
// GET /zipcodes?near={zip}&km={n}, and GET /zipcodes for the whole table
// with an ETag, which is what replicated copies refresh from.
//
// The table is seeded from an embedded data file of US zip codes (city,
// state, and approximate latitude and longitude of the area's centre). On
// start the file's version is compared with the one loaded; a new file is
// upserted, and rows an operator added are kept.
package location
