// Checks that node-argon2 accepts a hash crunch made: usage: node verify.mjs HASH PASSWORD → "true"/"false"
import argon2 from "argon2";
console.log(String(await argon2.verify(process.argv[2], process.argv[3])));
