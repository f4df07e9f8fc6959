# What a Rails application sees through ActiveRecord and the mysql2 gem (Debian's
# ruby-activerecord, ruby-mysql2): migrations with indexes and foreign keys, associations,
# unique and foreign-key errors, rolled-back and committed transactions, optimistic locking,
# savepoints, batches, row locks, upsert, destroy, ALTER. tests/go_ruby_clients.rs runs it
# against the proxy and against one server direct and compares the transcripts.
#
# usage: ruby activerecord_roundtrip.rb PORT
require "active_record"
require "mysql2"
require "logger"

port = ARGV[0].to_i
admin = Mysql2::Client.new(host: "127.0.0.1", port: port, username: "root")
admin.query("DROP DATABASE IF EXISTS ruby_app")
admin.query("CREATE DATABASE ruby_app")
admin.close

ActiveRecord::Base.establish_connection(adapter: "mysql2", host: "127.0.0.1", port: port,
  username: "root", database: "ruby_app", pool: 3, prepared_statements: false)

ActiveRecord::Schema.verbose = false
ActiveRecord::Schema.define do
  create_table :authors do |t|
    t.string :name, null: false
    t.integer :lock_version, default: 0
    t.timestamps
  end
  add_index :authors, :name, unique: true
  create_table :posts do |t|
    t.references :author, foreign_key: true
    t.string :title
    t.text :body
    t.decimal :score, precision: 8, scale: 3
    t.string :meta
    t.boolean :published, default: false
    t.timestamps
  end
end

class Author < ActiveRecord::Base
  has_many :posts
end
class Post < ActiveRecord::Base
  belongs_to :author
end

def show(label, v) = puts("#{label}: #{v.inspect}")

a = Author.create!(name: "ada")
b = Author.create!(name: "bob")
show "ids", [a.id, b.id]
3.times { |i| a.posts.create!(title: "t#{i}", body: "x" * (i * 1000), score: i + 0.125, meta: "m#{i}") }
show "count", Post.count
show "where", Post.where("score > ?", 1).order(:id).pluck(:title, :score)
show "string", Post.order(:id).first.meta
show "joins", Author.joins(:posts).group("authors.name").count
show "includes", Author.includes(:posts).order(:id).map { |x| [x.name, x.posts.size] }
begin
  Author.create!(name: "ada")
rescue => e
  show "dup", e.class
end
begin
  Post.create!(author_id: 999, title: "orphan")
rescue => e
  show "fk", e.class
end
Author.transaction do
  b.update!(name: "bobby")
  raise ActiveRecord::Rollback
end
show "rolled back", Author.find(b.id).name
b.reload
Author.transaction do
  b.update!(name: "bobby")
  Post.where(author: a).update_all(published: true)
end
show "committed", [Author.find(b.id).name, Post.where(published: true).count]
# Optimistic locking.
a.reload
x1 = Author.find(a.id); x2 = Author.find(a.id)
x1.update!(name: "ada2")
begin
  x2.update!(name: "ada3")
rescue => e
  show "stale", e.class
end
# Nested transaction with savepoint.
Author.transaction do
  Author.create!(name: "outer")
  Author.transaction(requires_new: true) do
    Author.create!(name: "inner")
    raise ActiveRecord::Rollback
  end
end
show "savepoint", Author.order(:id).pluck(:name)
# find_each in batches, lock, upsert.
show "batches", Post.in_batches(of: 2).map { |r| r.count }
Author.transaction { show "lock", Author.lock.find(a.id).name }
Post.upsert_all([{ id: 1, title: "up", author_id: a.id, created_at: Time.utc(2020), updated_at: Time.utc(2020) }])
show "upsert", Post.find(1).title
show "destroy", Post.where(id: 3).destroy_all.size
show "final", Post.order(:id).pluck(:id, :title, :published)
show "raw", ActiveRecord::Base.connection.select_rows("SELECT @@tx_isolation, DATABASE()")
ActiveRecord::Base.connection.execute("ALTER TABLE posts ADD COLUMN extra INT")
Post.reset_column_information
show "columns", Post.column_names
